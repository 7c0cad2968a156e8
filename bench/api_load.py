"""The API under load: GET one job, GET a page of the list, POST a new export, each at 64
concurrent connections for a fixed time, against the real `analytics-exports api` process.

Run: `.venv/bin/python -m bench.api_load [--seconds 10] [--connections 64]`. The load generator
is Python (aiohttp) on the same 2 cores as the API, PostgreSQL and RabbitMQ, so the figures are
a floor for the API, not its ceiling elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pika

from actors.localdev import free_port, moto_server, stop, wait_http
from bench.run import bench_database
from service.api.auth import READ, WRITE, mint_token
from service.settings import Settings
from service.storage import open_s3_client

SECRET = "api-load-secret-that-is-at-least-32-bytes!"  # noqa: S105 (a throwaway local stack)
BODY = {"timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-02T00:00:00Z"}, "granularity": "daily"}
Call = Callable[[aiohttp.ClientSession], Awaitable[int]]


async def hammer(call: Call, connections: int, seconds: float) -> dict[str, float]:
    """Run ``call`` from ``connections`` concurrent loops for ``seconds``; latency percentiles."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status = await call(http)
                latencies.append(time.perf_counter() - started)
                errors += status >= 400

        began = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "req_per_s": len(ordered) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "errors": errors,
    }


async def scenarios(base: str, connections: int, seconds: float) -> list[tuple[str, dict[str, float]]]:
    orgs = [uuid.uuid4() for _ in range(200)]
    tokens = {org: mint_token(SECRET, subject="load", orgs=[org], scopes=[READ, WRITE]) for org in orgs}
    home = orgs[0]
    auth = {"Authorization": f"Bearer {tokens[home]}"}
    async with aiohttp.ClientSession() as http:
        job_ids = []
        for _ in range(60):  # a list worth paging
            async with http.post(f"{base}/analytics/v1/orgs/{home}/exports", json=BODY, headers=auth) as r:
                assert r.status == 202, await r.text()
                job_ids.append((await r.json())["jobId"])

    async def get_job(http: aiohttp.ClientSession) -> int:
        async with http.get(f"{base}/analytics/v1/orgs/{home}/exports/{job_ids[0]}", headers=auth) as r:
            await r.read()
            return r.status

    async def get_list(http: aiohttp.ClientSession) -> int:
        async with http.get(f"{base}/analytics/v1/orgs/{home}/exports?limit=50", headers=auth) as r:
            await r.read()
            return r.status

    async def post_create(http: aiohttp.ClientSession) -> int:
        org = random.choice(orgs)
        headers = {"Authorization": f"Bearer {tokens[org]}"}
        async with http.post(f"{base}/analytics/v1/orgs/{org}/exports", json=BODY, headers=headers) as r:
            await r.read()
            return r.status

    results = []
    for name, call in (("GET job", get_job), ("GET list (50 items)", get_list), ("POST create", post_create)):
        results.append((name, await hammer(call, connections, seconds)))
    return results


async def create_bucket(settings: Settings) -> None:
    async with open_s3_client(settings) as client:
        await client.create_bucket(Bucket=settings.s3_bucket)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    queue = f"exports-load-{uuid.uuid4().hex[:8]}"
    with moto_server() as (endpoint, _), bench_database() as database_url:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "EXPORT_QUEUE": queue,
            "S3_ENDPOINT": endpoint,
            "S3_ACCESS_KEY": "load",
            "S3_SECRET_KEY": "load-secret",
            "S3_BUCKET": "analytics-load",
            "HTTP_PORT": str(port),
            "AUTH_JWT_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            # No worker runs: the POSTed jobs stay pending, so the org limit must not get in the way.
            "EXPORT_MAX_ACTIVE_PER_ORG": "10000",
        }
        settings = Settings.from_env(env)
        asyncio.run(create_bucket(settings))
        api = subprocess.Popen([str(Path(sys.executable).parent / "analytics-exports"), "api"], env=env)
        try:
            if not wait_http(f"http://127.0.0.1:{port}/readyz", 30):
                print("the API did not become ready", file=sys.stderr)
                return 1
            results = asyncio.run(scenarios(f"http://127.0.0.1:{port}", args.connections, args.seconds))
        finally:
            stop(api)
            connection = pika.BlockingConnection(pika.URLParameters(settings.rabbitmq_url))
            channel = connection.channel()
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                channel.queue_delete(queue=name)
            connection.close()
    print("| endpoint | connections | requests | req/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results:
        print(
            f"| {name} | {args.connections} | {r['requests']:,.0f} | {r['req_per_s']:,.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
