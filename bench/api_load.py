"""The API under load: GET one job, GET a page of the list, POST a new export, against real
`analytics-exports api` processes, with at most 64 connections open.

Two kinds of load, one endpoint at a time:

- closed loop (saturation): 64 clients each send their next request as soon as the last one
  answered. This finds the most requests per second the API serves; the latency it shows is mostly
  queueing, since by Little's law it is 64 / throughput.
- open loop (a fixed rate): requests are sent on a fixed schedule (``--rates``), whether or not
  earlier ones have answered, over at most 64 connections. Latency counts from the scheduled
  send time, so a request that waited for a free connection is charged for the wait (no
  coordinated omission). This is what a client sees at that load.

Also reported: the API processes' CPU milliseconds per request (from /proc), the figure least
disturbed by whatever else runs on the machine.

Run: `.venv/bin/python -m bench.api_load [--seconds 8] [--connections 64] [--api-processes 1]
[--rates 250,500,1000]`. The load generator is Python (aiohttp) on the same 2 cores as the API,
PostgreSQL and RabbitMQ.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pika

from bench.run import bench_database, process_cpu
from devtools.local import free_port, moto_server, stop, wait_http
from service.api.auth import READ, WRITE, mint_token
from service.settings import Settings
from service.storage import open_s3_client

SECRET = "api-load-secret-that-is-at-least-32-bytes!"  # noqa: S105 (a throwaway local stack)
BODY = {"timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-02T00:00:00Z"}, "granularity": "daily"}
#: One request: given a client session and the API's base URL, its HTTP status.
Call = Callable[[aiohttp.ClientSession, str], Awaitable[int]]


class Apis:
    """The API processes under test: base URLs to spread requests over, and their CPU."""

    def __init__(self, bases: list[str], pids: list[int]) -> None:
        self.bases = bases
        self.pids = pids
        self._next = 0

    def base(self) -> str:
        self._next += 1
        return self.bases[self._next % len(self.bases)]

    def cpu(self) -> float:
        return sum(process_cpu(pid) for pid in self.pids)


def summary(latencies: list[float], errors: int, elapsed: float, cpu_s: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "req_per_s": len(ordered) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
        "errors": errors,
        "api_cpu_ms_per_req": 1000 * cpu_s / max(len(ordered), 1),
    }


async def closed_loop(call: Call, apis: Apis, connections: int, seconds: float) -> dict[str, float]:
    """``connections`` clients, each sending its next request when the last one answered."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status = await call(http, apis.base())
                latencies.append(time.perf_counter() - started)
                errors += status >= 400

        cpu, began = apis.cpu(), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed, cpu = time.perf_counter() - began, apis.cpu() - cpu
    return summary(latencies, errors, elapsed, cpu)


async def open_loop(
    call: Call, apis: Apis, connections: int, seconds: float, rate: float
) -> dict[str, float]:
    """Requests at ``rate`` per second on a fixed schedule, over at most ``connections``
    connections; each latency counts from the request's scheduled time."""
    latencies: list[float] = []
    errors = 0
    slots = asyncio.Semaphore(connections)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(scheduled: float) -> None:
            nonlocal errors
            async with slots:
                status = await call(http, apis.base())
            latencies.append(time.perf_counter() - scheduled)
            errors += status >= 400

        tasks: list[asyncio.Task[None]] = []
        cpu, began = apis.cpu(), time.perf_counter()
        for i in range(int(rate * seconds)):
            scheduled = began + i / rate
            if (pause := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(pause)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
        elapsed, cpu = time.perf_counter() - began, apis.cpu() - cpu
    return summary(latencies, errors, elapsed, cpu)


async def scenarios(
    apis: Apis, connections: int, seconds: float, rates: list[float]
) -> list[tuple[str, str, dict[str, float]]]:
    orgs = [uuid.uuid4() for _ in range(200)]
    tokens = {org: mint_token(SECRET, subject="load", orgs=[org], scopes=[READ, WRITE]) for org in orgs}
    home = orgs[0]
    auth = {"Authorization": f"Bearer {tokens[home]}"}
    async with aiohttp.ClientSession() as http:
        job_ids = []
        for _ in range(60):  # a list worth paging
            url = f"{apis.base()}/analytics/v1/orgs/{home}/exports"
            async with http.post(url, json=BODY, headers=auth) as r:
                assert r.status == 202, await r.text()
                job_ids.append((await r.json())["jobId"])

    async def get_job(http: aiohttp.ClientSession, base: str) -> int:
        async with http.get(f"{base}/analytics/v1/orgs/{home}/exports/{job_ids[0]}", headers=auth) as r:
            await r.read()
            return r.status

    async def get_list(http: aiohttp.ClientSession, base: str) -> int:
        async with http.get(f"{base}/analytics/v1/orgs/{home}/exports?limit=50", headers=auth) as r:
            await r.read()
            return r.status

    async def post_create(http: aiohttp.ClientSession, base: str) -> int:
        org = random.choice(orgs)
        headers = {"Authorization": f"Bearer {tokens[org]}"}
        async with http.post(f"{base}/analytics/v1/orgs/{org}/exports", json=BODY, headers=headers) as r:
            await r.read()
            return r.status

    results = []
    for name, call in (("GET job", get_job), ("GET list (50 items)", get_list), ("POST create", post_create)):
        results.append((name, "closed loop", await closed_loop(call, apis, connections, seconds)))
        for rate in rates:
            load = f"open loop, {rate:g}/s"
            results.append((name, load, await open_loop(call, apis, connections, seconds, rate)))
    if shutil.which("wrk"):
        # The same closed loop from wrk (C): it takes less of the two cores than the Python client.
        job_url = f"{apis.bases[0]}/analytics/v1/orgs/{home}/exports/{job_ids[0]}"
        results.append(("GET job", "closed loop, wrk", wrk(apis, job_url, connections, seconds, auth=auth)))
        post = [(str(org), tokens[org]) for org in orgs]
        results.append(
            ("POST create", "closed loop, wrk", wrk(apis, apis.bases[0], connections, seconds, post=post))
        )
    return results


WRK_POST = """
local i = 0
request = function()
  i = i + 1
  local o = orgs[(i % #orgs) + 1]
  return wrk.format("POST", "/analytics/v1/orgs/" .. o[1] .. "/exports",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. o[2]}, body)
end
"""


def wrk(
    apis: Apis,
    url: str,
    connections: int,
    seconds: float,
    *,
    auth: dict[str, str] | None = None,
    post: list[tuple[str, str]] | None = None,
) -> dict[str, float]:
    """One wrk run (one thread, against the first API process): its req/s and percentiles, and
    the API's CPU per request. ``post`` round-robins POSTs over (org, token) pairs."""
    with tempfile.TemporaryDirectory() as tmp:
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
        if auth:
            command += [arg for key, value in auth.items() for arg in ("-H", f"{key}: {value}")]
        if post:
            script = Path(tmp) / "post.lua"
            pairs = ",".join(f'{{"{org}","{token}"}}' for org, token in post)
            body = json.dumps(BODY).replace("'", "")
            script.write_text(f"orgs = {{{pairs}}}\nbody = '{body}'\n{WRK_POST}", "utf-8")
            command += ["-s", str(script)]
        cpu = apis.cpu()
        out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
        cpu = apis.cpu() - cpu

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert match, out
        return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]

    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": requests,
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "max_ms": float("nan"),
        "errors": int(errors[1]) if errors else 0,
        "api_cpu_ms_per_req": 1000 * cpu / max(requests, 1),
    }


async def create_bucket(settings: Settings) -> None:
    async with open_s3_client(settings) as client:
        await client.create_bucket(Bucket=settings.s3_bucket)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--api-processes", type=int, default=1, help="API processes, each on a port of its own"
    )
    parser.add_argument(
        "--rates",
        default="250,500,1000",
        help="open-loop rates per second, comma-separated",
    )
    args = parser.parse_args(argv)
    rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
    queue = f"exports-load-{uuid.uuid4().hex[:8]}"
    with moto_server() as (endpoint, _), bench_database() as database_url:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "EXPORT_QUEUE": queue,
            "S3_ENDPOINT": endpoint,
            "S3_ACCESS_KEY": "load",
            "S3_SECRET_KEY": "load-secret",
            "S3_BUCKET": "analytics-load",
            "AUTH_JWT_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            # No worker runs: the POSTed jobs stay pending, so the org limit must not get in the way.
            "EXPORT_MAX_ACTIVE_PER_ORG": "10000",
        }
        settings = Settings.from_env(env)
        asyncio.run(create_bucket(settings))
        ports = [free_port() for _ in range(args.api_processes)]
        command = [str(Path(sys.executable).parent / "analytics-exports"), "api"]
        processes = [subprocess.Popen(command, env={**env, "HTTP_PORT": str(port)}) for port in ports]
        try:
            bases = [f"http://127.0.0.1:{port}" for port in ports]
            if not all(wait_http(f"{base}/readyz", 30) for base in bases):
                print("the API did not become ready", file=sys.stderr)
                return 1
            apis = Apis(bases, [process.pid for process in processes])
            results = asyncio.run(scenarios(apis, args.connections, args.seconds, rates))
        finally:
            for process in processes:
                stop(process)
            connection = pika.BlockingConnection(pika.URLParameters(settings.rabbitmq_url))
            channel = connection.channel()
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                channel.queue_delete(queue=name)
            connection.close()
    print(
        f"{args.api_processes} API process(es), at most {args.connections} connections, "
        f"{args.seconds:g} s per row (wrk rows: the first API process only)"
    )
    print("| endpoint | load | requests | req/s | p50 ms | p99 ms | max ms | API CPU ms/req | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, load, r in results:
        print(
            f"| {name} | {load} | {r['requests']:,.0f} | {r['req_per_s']:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['api_cpu_ms_per_req']:.2f} | {r['errors']:.0f} |"
        )
    failed = sum(r["errors"] for _, _, r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
