"""Scale-out: a batch of mid-size exports through the real API and one or more real workers.

    .venv/bin/python -m bench.scale_out [--jobs 40] [--workers 1,2] [--concurrency N] [--repeat N]
        [--orgs 8] [--db-set NAME=VALUE] [--out FILE]

The run starts its own ``moto_server`` (bench.run's), creates its own migrated database
``analytics_bench_<hex>`` (bench.run's ``bench_database``) and uses a RabbitMQ queue of its own
(``EXPORT_QUEUE=exports-scale-<hex>``; the queue and its ``.DQ``/``.XQ`` are deleted at the end).
It seeds ``--orgs`` orgs with bench.run's hourly rollups of the "small" size: 200 models x the 744
hours of October 2026, so one hourly export of an org is 148,800 rows, about 15 MiB of CSV (a
"mid-size" job). Jobs are spread over the orgs round-robin; ``EXPORT_MAX_ACTIVE_PER_ORG`` is raised
only if jobs/orgs exceeds its default.

For each configuration in ``--workers`` (``N`` = N worker processes with ``--concurrency`` threads
each, ``NxC`` = N processes with C each), in that order, once per ``--repeat`` (so 1 and 2 workers
alternate): start ``analytics-exports api`` and the N ``analytics-exports worker`` processes,
wait until the N workers consume the queue, then POST all jobs at once through the API (bearer
token from ``mint_token``), poll the job rows until all are terminal, and record:

- wall time from the first POST to the last ``completed_at``; jobs/minute from it;
- that every job succeeded with the seeded row count (the run fails otherwise; the highest
  attempt count is recorded), checked through the API as a client would too, and that the bucket
  holds exactly the jobs' objects at their byte counts (then it is emptied);
- per-job durations from the job rows: run (``started_at`` to ``completed_at``) and queue wait
  (``initiated_at`` to ``started_at``), p50 and max;
- CPU seconds (user + system, from /proc) over the window from the first POST to the moment all
  jobs were seen terminal: the worker processes, the API process, every ``postgres`` process as
  bench/run.py measures it (including exited backends, through the postmaster's cutime), the
  part of that spent by this run's database (its backends and their parallel workers, sampled
  every 0.1 s: a lower bound, as the last <0.1 s of a process that exits is missed), moto, the
  RabbitMQ server (every ``beam.smp``), this harness, and the whole machine's busy and idle time
  (/proc/stat). On a shared machine "all postgres", RabbitMQ and the machine figures include
  other people's work; "other" is the machine's busy time not accounted to this run's processes.

``--db-set NAME=VALUE`` is for experiments: it sets a PostgreSQL parameter on the throwaway
database only (``ALTER DATABASE ... SET``), e.g. ``max_parallel_workers_per_gather=0``.

The service processes run the code of the checkout the harness is run from (the JSON records its
commit and any uncommitted change under service/, actors/ or migrations/). The workers and the
API are stopped after every run. A markdown table goes to stdout and
everything to ``bench/results/scale_out-<timestamp>.json`` (or ``--out``). Exit status 1 if any job
did not succeed or any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
import pika
import pika.exceptions

from bench.run import (
    BUCKET,
    CLK_TCK,
    END,
    HOURS,
    ROOT,
    S3_KEYS,
    SEED_HOURLY,
    SIZES,
    START,
    TIMESTAMP_FORMAT,
    bench_database,
    bench_settings,
    machine_info,
    moto_server,
    postgres_cpu,
    process_cpu,
)
from devtools.local import free_port, stop, wait_http
from service.api.auth import READ, WRITE, mint_token
from service.job import manifest_key, object_key
from service.settings import MIB, Settings
from service.storage import open_s3_client

SECRET: Final = "scale-out-bench-secret-at-least-32-bytes!"  # noqa: S105 (a throwaway local stack)
SIZE: Final = "small"  # bench.run's size: 200 models x 744 hours = 148,800 rows per org
MODELS: Final = SIZES[SIZE]
EXPECTED_ROWS: Final = MODELS * HOURS
BODY: Final = {
    "timeRange": {"start": START.strftime(TIMESTAMP_FORMAT), "end": END.strftime(TIMESTAMP_FORMAT)},
    "granularity": "hourly",
}
TERMINAL: Final = frozenset({"succeeded", "failed", "cancelled", "expired"})
#: How often the job rows are polled, and the /proc sampling of postgres processes.
POLL_INTERVAL: Final = 0.2
SAMPLE_INTERVAL: Final = 0.1
#: How long one run (all jobs) may take before it is failed.
RUN_TIMEOUT: Final = 1800.0
#: Workers drain on SIGTERM (EXPORT_SHUTDOWN_GRACE, 30 s); nothing runs when they are stopped.
STOP_TIMEOUT: Final = 60.0
DEFAULT_MAX_ACTIVE_PER_ORG: Final = Settings().export_max_active_per_org
PARALLEL_WORKER: Final = re.compile(r"parallel worker for PID (\d+)")


# --------------------------------------------------------------------------------------------
# CPU accounting


def machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot, from /proc/stat (idle includes
    iowait; guest time is already inside user)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / CLK_TCK, idle / CLK_TCK


def pids_named(name: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", encoding="ascii", errors="replace") as f:
                    if f.read().strip() == name:
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("ascii", errors="replace")
    except OSError:
        return None


def _cpu_ticks(pid: int) -> int | None:
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@dataclass(slots=True)
class PgProcess:
    base: int  # ticks when first seen (0 if born after the start)
    last: int
    label: str | None = None  # "ours", "other", or None while not yet known


class CpuSampler:
    """CPU over a window: named processes (start/end), every postgres process (bench.run's
    ``postgres_cpu``), the share of this database's backends (sampled in a thread), the machine."""

    def __init__(self, database: str, tracked: Mapping[str, Sequence[int]]) -> None:
        self._database = database
        self._tracked = {name: list(pids) for name, pids in tracked.items()}
        self._pg: dict[int, PgProcess] = {}
        self._not_pg: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)
        self._start: dict[str, float] = {}
        self.scans = 0

    def _tracked_cpu(self) -> dict[str, float]:
        return {name: sum(process_cpu(pid) for pid in pids) for name, pids in self._tracked.items()}

    def _classify(self, pid: int) -> str | None:
        cmdline = _read(f"/proc/{pid}/cmdline")
        if cmdline is None:
            return None
        if f" {self._database} " in cmdline + " ":
            return "ours"
        match = PARALLEL_WORKER.search(cmdline)
        if match:
            leader = self._pg.get(int(match.group(1)))
            return None if leader is None or leader.label is None else leader.label
        if "postgres: " in cmdline:  # a backend of another database, or a background process
            return "other"
        return None  # just forked: still the postmaster's command line

    def _scan(self, initial: bool = False) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid in self._not_pg:
                continue
            proc = self._pg.get(pid)
            if proc is None:
                comm = _read(f"/proc/{pid}/comm")
                if comm is None:
                    continue
                if comm.strip() != "postgres":
                    self._not_pg.add(pid)
                    continue
            ticks = _cpu_ticks(pid)
            if ticks is None:
                continue
            if proc is None:
                proc = self._pg[pid] = PgProcess(base=ticks if initial else 0, last=ticks)
            proc.last = max(proc.last, ticks)
            if proc.label is None:
                proc.label = self._classify(pid)
        self.scans += 1

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self._scan()

    def start(self) -> None:
        self._scan(initial=True)
        busy, idle = machine_cpu()
        self._start = {
            "wall": time.perf_counter(),
            "busy": busy,
            "idle": idle,
            "pg_all": postgres_cpu(),
            "harness": _own_cpu(),
            **{f"p:{k}": v for k, v in self._tracked_cpu().items()},
        }
        self._thread.start()

    def close(self) -> None:
        """Stop the sampling thread (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def stop(self) -> dict[str, float]:
        self.close()
        self._scan()
        wall = time.perf_counter() - self._start["wall"]
        busy, idle = machine_cpu()
        tracked = self._tracked_cpu()
        by_label: dict[str | None, float] = {}
        for proc in self._pg.values():
            by_label[proc.label] = by_label.get(proc.label, 0.0) + (proc.last - proc.base) / CLK_TCK
        result = {
            "window_s": wall,
            **{f"{k}_cpu_s": tracked[k] - self._start[f"p:{k}"] for k in tracked},
            "pg_all_cpu_s": postgres_cpu() - self._start["pg_all"],
            "pg_this_db_cpu_s": by_label.get("ours", 0.0),
            "pg_unclassified_cpu_s": by_label.get(None, 0.0),
            "pg_this_db_processes": sum(p.label == "ours" for p in self._pg.values()),
            "harness_cpu_s": _own_cpu() - self._start["harness"],
            "machine_busy_cpu_s": busy - self._start["busy"],
            "machine_idle_cpu_s": idle - self._start["idle"],
        }
        ours = sum(result[f"{k}_cpu_s"] for k in (*tracked, "pg_this_db", "harness"))
        # A shared RabbitMQ counts in full (it serves others too); so "other" is a lower bound.
        result["other_cpu_s"] = result["machine_busy_cpu_s"] - ours
        total = result["machine_busy_cpu_s"] + result["machine_idle_cpu_s"]
        result["machine_idle_pct"] = 100 * result["machine_idle_cpu_s"] / total if total else 0.0
        result["samples"] = self.scans
        return result


def _own_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


# --------------------------------------------------------------------------------------------
# The stack: database, S3, queue, processes


@dataclass(frozen=True, slots=True)
class Config:
    workers: int
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.workers} x {self.concurrency}"


@dataclass(slots=True)
class Stack:
    database_url: str
    s3_endpoint: str
    moto_pid: int
    queue: str
    orgs: list[uuid.UUID]
    max_active_per_org: int
    log_dir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return urlsplit(self.database_url).path.lstrip("/")

    def env(self, concurrency: int, port: int) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "EXPORT_QUEUE": self.queue,
            "S3_ENDPOINT": self.s3_endpoint,
            **S3_KEYS,
            "S3_BUCKET": BUCKET,
            "HTTP_PORT": str(port),
            "AUTH_JWT_SECRET": SECRET,
            "EXPORT_WORKER_CONCURRENCY": str(concurrency),
            "EXPORT_MAX_ACTIVE_PER_ORG": str(self.max_active_per_org),
            **self.env_overrides,
        }


async def seed(database_url: str, s3_endpoint: str, orgs: Sequence[uuid.UUID]) -> dict[str, object]:
    """The bucket, bench.run's hourly rollups for every org, then VACUUM (ANALYZE) and CHECKPOINT."""
    async with open_s3_client(bench_settings(database_url, s3_endpoint)) as client:
        await client.create_bucket(Bucket=BUCKET)
    began = time.perf_counter()
    conn = await asyncpg.connect(database_url)
    try:
        rows = 0
        for org in orgs:
            status = await conn.execute(SEED_HOURLY, org, MODELS, START, HOURS, timeout=1800)
            rows += int(status.split()[-1])
        await conn.execute("VACUUM (ANALYZE) analytics.hourly_rollups", timeout=1800)
        await conn.execute("CHECKPOINT", timeout=600)
        size = await conn.fetchval("SELECT pg_total_relation_size('analytics.hourly_rollups')")
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("max_connections", "max_worker_processes", "max_parallel_workers")
        }
    finally:
        await conn.close()
    return {
        "orgs": len(orgs),
        "models": MODELS,
        "hours": HOURS,
        "rows": rows,
        "rows_per_org": EXPECTED_ROWS,
        "table_size_mib": round(size / MIB, 1),
        "seed_s": round(time.perf_counter() - began, 1),
        **{f"postgresql_{k}": v for k, v in settings.items()},
    }


def broker_connection(rabbitmq_url: str) -> Any:
    return pika.BlockingConnection(pika.URLParameters(rabbitmq_url))


def consumer_count(rabbitmq_url: str, queue: str) -> int:
    """Consumers on ``queue`` (0 if it does not exist yet)."""
    connection = broker_connection(rabbitmq_url)
    try:
        frame = connection.channel().queue_declare(queue=queue, passive=True)
        return int(frame.method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError):
            connection.close()


def wait_consumers(
    rabbitmq_url: str, queue: str, count: int, processes: Sequence[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("a worker exited while starting")
        if consumer_count(rabbitmq_url, queue) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{count} worker(s) did not start consuming {queue} within 60 s")


def delete_queues(rabbitmq_url: str, queue: str) -> None:
    connection = broker_connection(rabbitmq_url)
    try:
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(queue=name)
    finally:
        connection.close()


def spawn(command: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "analytics-exports"), command],
            env=dict(env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextlib.contextmanager
def running(config: Config, stack: Stack, name: str) -> Iterator[tuple[int, int, list[int]]]:
    """The API and ``config.workers`` workers, ready: (api port, api pid, worker pids)."""
    port = free_port()
    env = stack.env(config.concurrency, port)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        # Each process serves its metrics on a port of its own (the API refuses to start without).
        api = spawn("api", {**env, "METRICS_PORT": str(free_port())}, stack.log_dir / f"{name}-api.log")
        processes.append(api)
        workers = [
            spawn(
                "worker",
                {**env, "METRICS_PORT": str(free_port())},
                stack.log_dir / f"{name}-worker{i + 1}.log",
            )
            for i in range(config.workers)
        ]
        processes += workers
        if not wait_http(f"http://127.0.0.1:{port}/readyz", 60, api):
            raise RuntimeError(f"the API did not become ready; see {stack.log_dir}/{name}-api.log")
        wait_consumers(Settings.from_env(env).rabbitmq_url, stack.queue, config.workers, workers)
        yield port, api.pid, [w.pid for w in workers]
    finally:
        for proc in reversed(processes):  # workers first, then the API
            stop(proc, timeout=STOP_TIMEOUT)


# --------------------------------------------------------------------------------------------
# One run


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def drive(stack: Stack, jobs: int, port: int, tracked: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """POST ``jobs`` exports through the API, wait until all are terminal, measure, verify."""
    base = f"http://127.0.0.1:{port}/analytics/v1"
    token = mint_token(SECRET, subject="scale-out-bench", orgs=stack.orgs, scopes=[READ, WRITE])
    headers = {"Authorization": f"Bearer {token}"}
    orgs = [stack.orgs[i % len(stack.orgs)] for i in range(jobs)]
    problems: list[str] = []
    conn = await asyncpg.connect(stack.database_url)
    sampler = CpuSampler(stack.database, tracked)
    try:
        async with aiohttp.ClientSession(headers=headers) as http:

            async def post(org: uuid.UUID) -> uuid.UUID:
                async with http.post(f"{base}/orgs/{org}/exports", json=BODY) as response:
                    if response.status != 202:
                        raise RuntimeError(f"POST answered {response.status}: {await response.text()}")
                    return uuid.UUID((await response.json())["jobId"])

            sampler.start()
            first_post = time.time()
            began = time.perf_counter()
            job_ids = await asyncio.gather(*(post(org) for org in orgs))
            posted_s = time.perf_counter() - began
            while True:
                counts = dict(
                    await conn.fetch(
                        "SELECT status::text, count(*) FROM analytics.export_jobs"
                        " WHERE job_id = ANY($1::uuid[]) GROUP BY 1",
                        job_ids,
                    )
                )
                if sum(n for status, n in counts.items() if status in TERMINAL) == jobs:
                    break
                if time.perf_counter() - began > RUN_TIMEOUT:
                    problems.append(f"not all terminal after {RUN_TIMEOUT:.0f} s: {counts}")
                    break
                await asyncio.sleep(POLL_INTERVAL)
            seen_done_s = time.perf_counter() - began
            cpu = sampler.stop()
            rows = await conn.fetch(
                "SELECT job_id, org_id, status::text AS status, row_count, byte_count, attempt,"
                " error_message, extract(epoch FROM initiated_at)::float8 AS initiated,"
                " extract(epoch FROM started_at)::float8 AS started,"
                " extract(epoch FROM completed_at)::float8 AS completed"
                " FROM analytics.export_jobs WHERE job_id = ANY($1::uuid[])",
                job_ids,
            )
            # As a client would: every job, through the API.
            for job_id, org in zip(job_ids, orgs, strict=True):
                async with http.get(f"{base}/orgs/{org}/exports/{job_id}") as response:
                    job = await response.json()
                    if response.status != 200 or job.get("status") != "succeeded" or not job.get("checksum"):
                        problems.append(f"GET {job_id}: {response.status} {job.get('status')}")
    finally:
        sampler.close()
        await conn.close()
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
        if row["status"] != "succeeded":
            problems.append(f"job {row['job_id']} {row['status']}: {row['error_message']}")
        elif row["row_count"] != EXPECTED_ROWS:
            problems.append(f"job {row['job_id']}: {row['row_count']} rows, not {EXPECTED_ROWS}")
    done = [r for r in rows if r["completed"] is not None and r["started"] is not None]
    last_completed = max((r["completed"] for r in done), default=first_post)
    wall = last_completed - first_post
    durations = [r["completed"] - r["started"] for r in done]
    waits = [r["started"] - r["initiated"] for r in done]
    return {
        "jobs": jobs,
        "succeeded": by_status.get("succeeded", 0),
        "statuses": by_status,
        "attempts_max": max((r["attempt"] for r in rows), default=0),
        "wall_s": wall,
        "jobs_per_min": 60 * jobs / wall if wall > 0 else 0.0,
        "post_s": posted_s,
        "seen_done_s": seen_done_s,
        "job_p50_s": statistics.median(durations) if durations else None,
        "job_p90_s": percentile(durations, 0.9) if durations else None,
        "job_max_s": max(durations, default=None),
        "job_min_s": min(durations, default=None),
        "wait_p50_s": statistics.median(waits) if waits else None,
        "wait_max_s": max(waits, default=None),
        "bytes_total": sum(r["byte_count"] or 0 for r in rows),
        "mib_per_s": sum(r["byte_count"] or 0 for r in rows) / MIB / wall if wall > 0 else 0.0,
        "cpu": cpu,
        "problems": problems,
        "objects": {str(r["job_id"]): (r["org_id"], r["byte_count"]) for r in rows},
    }


async def check_and_empty_bucket(stack: Stack, objects: Mapping[str, tuple[uuid.UUID, int]]) -> list[str]:
    """The bucket must hold exactly the jobs' objects, each of its job's byte count, and their
    manifests, and no unfinished multipart upload; then it is emptied for the next run."""
    problems: list[str] = []
    expected = {object_key(org, uuid.UUID(job)): size for job, (org, size) in objects.items()}
    manifests = {manifest_key(org, uuid.UUID(job)) for job, (org, _) in objects.items()}
    async with open_s3_client(bench_settings(stack.database_url, stack.s3_endpoint)) as raw:
        client: Any = raw
        found: dict[str, int] = {}
        token: dict[str, str] = {}
        while True:
            page = await client.list_objects_v2(Bucket=BUCKET, **token)
            found.update({str(o["Key"]): int(o["Size"]) for o in page.get("Contents", []) or []})
            if not page.get("IsTruncated"):
                break
            token = {"ContinuationToken": page["NextContinuationToken"]}
        files = {key: size for key, size in found.items() if key not in manifests}
        if files != expected or set(found) - set(files) != manifests:
            missing = sorted((set(expected) | manifests) - set(found))
            extra = sorted(set(files) - set(expected))
            wrong = sorted(k for k in set(files) & set(expected) if files[k] != expected[k])
            problems.append(f"bucket: {len(missing)} missing, {len(extra)} extra, {len(wrong)} of wrong size")
        for key in found:
            await client.delete_object(Bucket=BUCKET, Key=key)
        uploads = await client.list_multipart_uploads(Bucket=BUCKET)
        for upload in uploads.get("Uploads", []) or []:
            problems.append(f"incomplete multipart upload left: {upload['Key']}")
            await client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
    return problems


def measure(stack: Stack, config: Config, jobs: int, repeat: int) -> dict[str, Any]:
    name = f"r{repeat}-{config.workers}x{config.concurrency}"
    load_before = os.getloadavg()
    with running(config, stack, name) as (port, api_pid, worker_pids):
        tracked = {
            "workers": worker_pids,
            "api": [api_pid],
            "moto": [stack.moto_pid],
            "rabbitmq": pids_named("beam.smp"),
        }
        result = asyncio.run(drive(stack, jobs, port, tracked))
    objects = result.pop("objects")
    result["problems"] += asyncio.run(check_and_empty_bucket(stack, objects))
    if result["succeeded"] != jobs:
        result["problems"].append(f"{result['succeeded']} of {jobs} jobs succeeded")
    return {
        "repeat": repeat,
        "workers": config.workers,
        "concurrency": config.concurrency,
        "label": config.label,
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        **result,
    }


# --------------------------------------------------------------------------------------------
# Reporting


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def cores(run: Mapping[str, Any], key: str) -> str:
    cpu = run["cpu"]
    seconds = cpu[key]
    return f"{seconds:.1f} ({seconds / cpu['window_s']:.2f})"


def summarise(runs: Sequence[Mapping[str, Any]], configs: Sequence[Config]) -> list[dict[str, Any]]:
    """Per configuration: median jobs/min over the repeats, its spread, and its ratio to the first
    configuration's median."""
    rows: list[dict[str, Any]] = []
    for config in configs:
        mine = [r for r in runs if r["workers"] == config.workers and r["concurrency"] == config.concurrency]
        if not mine:
            continue
        rates = [r["jobs_per_min"] for r in mine]
        rows.append(
            {
                "label": config.label,
                "workers": config.workers,
                "concurrency": config.concurrency,
                "runs": len(mine),
                "jobs_per_min_median": statistics.median(rates),
                "jobs_per_min_all": rates,
                "wall_s_median": statistics.median(r["wall_s"] for r in mine),
                "job_p50_s_median": statistics.median(r["job_p50_s"] or 0.0 for r in mine),
                "cpu_per_job_s_median": statistics.median(own_cpu(r) / r["jobs"] for r in mine),
                "own_cores_median": statistics.median(own_cpu(r) / r["cpu"]["window_s"] for r in mine),
                "cores": {
                    key: statistics.median(r["cpu"][f"{key}_cpu_s"] / r["cpu"]["window_s"] for r in mine)
                    for key in ("workers", "api", "pg_all", "pg_this_db", "moto", "rabbitmq", "other")
                }
                | {"idle": statistics.median(r["cpu"]["machine_idle_pct"] for r in mine) / 100 * nproc()},
            }
        )
    if rows:
        base = rows[0]["jobs_per_min_median"]
        first = configs[0]
        for row in rows:
            row["vs_first"] = row["jobs_per_min_median"] / base if base else None
            # The same ratio within each repeat (the runs closest in time): less exposed to drift.
            row["vs_first_paired"] = [
                r["jobs_per_min"] / f["jobs_per_min"]
                for r in runs
                if r["workers"] == row["workers"] and r["concurrency"] == row["concurrency"]
                for f in runs
                if f["repeat"] == r["repeat"]
                and (f["workers"], f["concurrency"]) == (first.workers, first.concurrency)
            ]
    return rows


def own_cpu(run: Mapping[str, Any]) -> float:
    """CPU seconds of this run's own processes: workers, API, this database's PostgreSQL
    backends, moto (not RabbitMQ, which is shared; not the harness)."""
    cpu = run["cpu"]
    return float(sum(cpu[f"{k}_cpu_s"] for k in ("workers", "api", "pg_this_db", "moto")))


def nproc() -> int:
    return len(os.sched_getaffinity(0))


def markdown(runs: Sequence[Mapping[str, Any]], summary: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| run | workers x threads | jobs | wall s | jobs/min | MiB/s | job p50 s | job max s "
        "| queue wait p50 / max s | succeeded |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for i, r in enumerate(runs, 1):
        lines.append(
            f"| {i} | {r['label']} | {r['jobs']} | {fmt(r['wall_s'])} | {fmt(r['jobs_per_min'])} | "
            f"{fmt(r['mib_per_s'])} | {fmt(r['job_p50_s'], 2)} | {fmt(r['job_max_s'], 2)} | "
            f"{fmt(r['wait_p50_s'])} / {fmt(r['wait_max_s'])} | {r['succeeded']}/{r['jobs']} |"
        )
    lines += [
        "",
        "CPU seconds over each run's window (first POST until all jobs were seen finished), and in",
        'parentheses the average number of cores busy. PostgreSQL "all" is every postgres process',
        '(as bench/run.py measures it, other databases included); "this DB" is the backends of',
        'this run\'s database and their parallel workers (sampled, a lower bound); "other" is the',
        "machine's busy time not accounted to this run's processes (other people's work).",
        "",
        "| run | workers x threads | window s | workers | API | PostgreSQL all | PostgreSQL this DB "
        "| moto | RabbitMQ | harness | other | machine idle |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(runs, 1):
        cpu = r["cpu"]
        idle_cores = cpu["machine_idle_cpu_s"] / cpu["window_s"]
        lines.append(
            f"| {i} | {r['label']} | {fmt(cpu['window_s'])} | {cores(r, 'workers_cpu_s')} | "
            f"{cores(r, 'api_cpu_s')} | {cores(r, 'pg_all_cpu_s')} | {cores(r, 'pg_this_db_cpu_s')} | "
            f"{cores(r, 'moto_cpu_s')} | {cores(r, 'rabbitmq_cpu_s')} | {cores(r, 'harness_cpu_s')} | "
            f"{cores(r, 'other_cpu_s')} | {cpu['machine_idle_cpu_s']:.1f} ({idle_cores:.2f}; "
            f"{cpu['machine_idle_pct']:.0f}%) |"
        )
    lines += [
        "",
        "Per job (CPU seconds / jobs, this run's processes only):",
        "",
        "| run | workers x threads | workers | PostgreSQL this DB | moto | RabbitMQ (all) | API |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(runs, 1):
        cpu, n = r["cpu"], r["jobs"]
        lines.append(
            f"| {i} | {r['label']} | {cpu['workers_cpu_s'] / n:.3f} | {cpu['pg_this_db_cpu_s'] / n:.3f} | "
            f"{cpu['moto_cpu_s'] / n:.3f} | {cpu['rabbitmq_cpu_s'] / n:.3f} | {cpu['api_cpu_s'] / n:.3f} |"
        )
    lines += [
        "",
        'Summary (medians over the repeats; "vs first" divides by the first configuration\'s median,',
        "\"paired\" by the first configuration's run in the same repeat; cores: this run's workers,",
        "API, PostgreSQL backends and moto; CPU-s per job: the same processes' CPU / jobs).",
        "",
        "| workers x threads | runs | jobs/min (median) | jobs/min (each run) | vs first | paired "
        "| job p50 s | CPU-s per job | cores used by the run | other cores | idle cores |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        each = ", ".join(f"{v:.1f}" for v in s["jobs_per_min_all"])
        paired = ", ".join(f"{v:.2f}" for v in s["vs_first_paired"])
        lines.append(
            f"| {s['label']} | {s['runs']} | {s['jobs_per_min_median']:.1f} | {each} | "
            f"{fmt(s['vs_first'], 2)}x | {paired} | {fmt(s['job_p50_s_median'], 2)} | "
            f"{s['cpu_per_job_s_median']:.2f} | {s['own_cores_median']:.2f} | "
            f"{s['cores']['other']:.2f} | {s['cores']['idle']:.2f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main


def code_version() -> dict[str, object]:
    """The commit the processes ran, and the files of service/, actors/ or migrations/ that
    differed from it (other people edit the working tree; a snapshot checkout avoids that)."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "service", "actors", "migrations")
    return {
        "root": str(ROOT),
        "commit": git("rev-parse", "HEAD") or "unknown",
        "uncommitted_service_files": [line[3:] for line in changed.splitlines()],
    }


async def set_database_options(database_url: str, options: Mapping[str, str]) -> None:
    """``ALTER DATABASE <this run's database> SET name = value``: an experiment on the throwaway
    database only (the server's settings, shared with others, are left alone). Connections opened
    afterwards (the API's and the workers') use it."""
    database = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(database_url)
    try:
        for name, value in options.items():
            await conn.execute(f"ALTER DATABASE \"{database}\" SET {name} = '{value}'")
    finally:
        await conn.close()


def parse_db_options(items: Sequence[str]) -> dict[str, str]:
    options = {}
    for item in items:
        match = re.fullmatch(r"([a-z_]+)=([A-Za-z0-9_.]+)", item.strip())
        if not match:
            raise SystemExit(f"--db-set: {item!r} is not name=value (e.g. max_parallel_workers_per_gather=0)")
        options[match.group(1)] = match.group(2)
    return options


def print_logs(logs: Path, repeat: int, config: Config) -> None:
    """The last lines of a failed run's API and worker logs, on stderr."""
    for log in sorted(logs.glob(f"r{repeat}-{config.workers}x{config.concurrency}-*")):
        tail = log.read_text(errors="replace").splitlines()[-20:]
        print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)


def parse_configs(raw: str, concurrency: int) -> list[Config]:
    configs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        match = re.fullmatch(r"(\d+)(?:x(\d+))?", item)
        if not match or int(match.group(1)) < 1 or (match.group(2) is not None and int(match.group(2)) < 1):
            raise SystemExit(f"--workers: {item!r} is not N or NxC (N processes, C threads each)")
        configs.append(Config(int(match.group(1)), int(match.group(2) or concurrency)))
    if not configs:
        raise SystemExit("--workers: give at least one worker count")
    return configs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale_out",
        description="Scale-out: mid-size exports through the API and N worker processes.",
    )
    parser.add_argument("--jobs", type=int, default=40, help="exports per run (default 40)")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="comma-separated worker process counts, run in this order each repeat; "
        "NxC = N processes with C threads each (default 1,2)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=Settings().export_worker_concurrency,
        help="EXPORT_WORKER_CONCURRENCY of each worker (default: the service's, 2)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds over --workers (default 1)")
    parser.add_argument("--orgs", type=int, default=8, help="orgs seeded, jobs spread over them (default 8)")
    parser.add_argument(
        "--db-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="experiment: ALTER DATABASE (the throwaway one) SET NAME = VALUE, e.g. "
        "max_parallel_workers_per_gather=0 (repeatable; default: the server's settings)",
    )
    parser.add_argument("--out", help="JSON path (default bench/results/scale_out-<timestamp>.json)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeat < 1 or args.orgs < 1 or args.concurrency < 1:
        raise SystemExit("--jobs, --repeat, --orgs and --concurrency must be at least 1")
    configs = parse_configs(args.workers, args.concurrency)
    db_options = parse_db_options(args.db_set)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"scale_out-{stamp}.json"
    began = time.monotonic()

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks: processes, queue, db, moto

    signal.signal(signal.SIGTERM, terminated)

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - began:7.1f}s] {message}", file=sys.stderr, flush=True)

    orgs = [uuid.uuid4() for _ in range(args.orgs)]
    queue = f"exports-scale-{uuid.uuid4().hex[:8]}"
    rabbitmq_url = Settings.from_env(os.environ).rabbitmq_url
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="scale_out-") as logs,
        moto_server() as (endpoint, moto_pid),
        bench_database() as database_url,
    ):
        stack = Stack(
            database_url,
            endpoint,
            moto_pid,
            queue,
            orgs,
            max(DEFAULT_MAX_ACTIVE_PER_ORG, math.ceil(args.jobs / args.orgs)),
            Path(logs),
        )
        try:
            progress(f"moto_server at {endpoint}, database {stack.database}, queue {queue}")
            seeded = asyncio.run(seed(database_url, endpoint, orgs))
            progress(f"seeded: {seeded}")
            if db_options:
                asyncio.run(set_database_options(database_url, db_options))
                progress(f"database options: {db_options}")
            machine = machine_info(database_url) | {"code": code_version()}
            effective = Settings.from_env(stack.env(args.concurrency, 0))
            for repeat in range(1, args.repeat + 1):
                for config in configs:
                    progress(
                        f"run {repeat}/{args.repeat}: {config.label} (workers x threads), {args.jobs} jobs"
                    )
                    try:
                        run = measure(stack, config, args.jobs, repeat)
                    except Exception as exc:
                        problems.append(f"{config.label}#{repeat}: {type(exc).__name__}: {exc}")
                        progress(f"  FAILED: {problems[-1]}")
                        print_logs(Path(logs), repeat, config)
                        break
                    runs.append(run)
                    cpu = run["cpu"]
                    progress(
                        f"  {run['wall_s']:.1f} s, {run['jobs_per_min']:.1f} jobs/min, "
                        f"job p50 {fmt(run['job_p50_s'], 2)} s, "
                        f"{run['succeeded']}/{args.jobs} succeeded; cores: "
                        + ", ".join(
                            f"{k} {cpu[f'{k}_cpu_s'] / cpu['window_s']:.2f}"
                            for k in ("workers", "pg_this_db", "pg_all", "moto", "rabbitmq", "other")
                        )
                        + f", idle {cpu['machine_idle_pct']:.0f}%"
                    )
                    if run["problems"]:
                        problems += [f"{config.label}#{repeat}: {p}" for p in run["problems"]]
                        progress(f"  PROBLEMS: {run['problems'][:5]}")
                        print_logs(Path(logs), repeat, config)
                        break
                if problems:
                    break
        finally:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                delete_queues(rabbitmq_url, queue)

    summary = summarise(runs, configs)
    table = markdown(runs, summary)
    elapsed = time.monotonic() - began
    print(table)
    print(f"\ntotal run time {elapsed:.0f} s" + (f"; PROBLEMS: {problems}" if problems else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": {**machine, "loadavg_at_end": [round(v, 2) for v in os.getloadavg()]},
        "config": {
            "jobs": args.jobs,
            "workers": [asdict(c) for c in configs],
            "repeat": args.repeat,
            "orgs": args.orgs,
            "queue": queue,
            "body": BODY,
            "expected_rows_per_job": EXPECTED_ROWS,
            "export_worker_concurrency_default": args.concurrency,
            "export_max_active_per_org": effective.export_max_active_per_org,
            "export_part_size": effective.export_part_size,
            "export_parts_in_flight": effective.export_parts_in_flight,
            "log_level": effective.log_level,
            "seeded": seeded,
            "database_options": db_options,
        },
        "summary": summary,
        "runs": runs,
        "problems": problems,
        "markdown": table,
        "total_seconds": round(elapsed, 1),
    }
    out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print(f"results written to {out}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
