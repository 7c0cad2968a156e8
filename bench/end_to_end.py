"""End to end: an export as a user feels it, through the real processes, beside the limit.

    .venv/bin/python -m bench.end_to_end [--sizes typical,small,large] [--repeat 3]
        [--in-process] [--parts-in-flight N] [--py-spy DIR] [--checkout DIR] [--set NAME=VALUE]
        [--out FILE]

The run starts its own ``moto_server``, creates its own migrated database and uses a RabbitMQ
queue of its own (all removed at the end), seeds bench.run's hourly rollups (one org per size),
and starts ``analytics-exports api``, ``worker`` and ``scheduler`` on their default settings
(only where things are and the token secret are set). Then, for every size, ``--repeat`` rounds,
the paths alternating within each round:

- ``e2e``: POST an hourly CSV export of the org's whole month through the API and wait for
  ``succeeded``; **POST → succeeded** runs from just before the POST to the ``succeeded`` audit
  event (``clock_timestamp()``), **started → succeeded** between the ``started`` and ``succeeded``
  events. The worker's peak RSS is its VmHWM, reset before the POST. CPU of the worker, the API,
  the scheduler, every ``postgres`` process and moto are read from /proc around the export.
  The file is downloaded and its SHA-256 must be the job's checksum.
- ``A_psql_copy``: bench.run's limit in a child process: ``psql \\copy`` of the same query into a
  multipart upload with as many parts in flight as the worker (``EXPORT_PARTS_IN_FLIGHT``,
  ``--parts-in-flight``); ``A_psql_copy_serial``, one part at a time, beside it.
- ``ours`` (with ``--in-process``): bench.run's in-process ``Exporter.run`` on a created job.

Every path must write the same bytes (the run exits 1 otherwise). ``--py-spy DIR`` records the
worker with py-spy (``pip install py-spy``) during each e2e export: folded stacks per export
(speedscope and flamegraph.pl read them).
``--checkout DIR`` runs the service processes from another checkout's code (a git worktree of
an older commit: before and after in one run's conditions). One warm-up export per size (not
recorded) opens the worker's pool and S3 client and puts the rollups in the page cache. A
markdown table goes to stdout, everything to
``bench/results/end_to_end-<timestamp>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
import asyncpg
import orjson

from bench.run import (
    BUCKET,
    END,
    HOURS,
    PART_SIZE,
    ROOT,
    S3_KEYS,
    SIZES,
    START,
    TIMESTAMP_FORMAT,
    Spec,
    bench_database,
    bench_settings,
    machine_info,
    moto_server,
    postgres_cpu,
    prepare,
    process_cpu,
    spawn_child,
    status_mib,
)
from bench.scale_out import code_version, delete_queues, wait_consumers
from devtools.local import free_port, stop, wait_http
from service.api.auth import READ, WRITE, mint_token
from service.job import object_key
from service.migrations import load_migrations, migrate_down
from service.settings import MIB, Settings
from service.storage import open_s3_client

SECRET: Final = "end-to-end-bench-secret-at-least-32-bytes!"  # noqa: S105 (a throwaway local stack)
BODY: Final = {
    "timeRange": {"start": START.strftime(TIMESTAMP_FORMAT), "end": END.strftime(TIMESTAMP_FORMAT)},
    "granularity": "hourly",
}
PATHS: Final = ("A_psql_copy", "A_psql_copy_serial", "ours", "e2e")
#: How often the harness looks for the job's end (the times themselves come from the audit events).
POLL_INTERVAL: Final = 0.05
JOB_TIMEOUT: Final = 600.0
STOP_TIMEOUT: Final = 60.0

EVENT_TIMES: Final = """
SELECT event, occurred_at FROM analytics.export_events
WHERE job_id = $1 AND event IN ('started', 'succeeded', 'failed') ORDER BY event_id
"""


@dataclass(frozen=True, slots=True)
class Processes:
    port: int
    api: int
    worker: int
    scheduler: int


def spawn(role: str, env: Mapping[str, str], checkout: Path, log: Path) -> subprocess.Popen[bytes]:
    """``analytics-exports ROLE`` from ``checkout``'s code (this venv's packages)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", role],
            env={**env, "PYTHONPATH": str(checkout)},
            cwd=checkout,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextlib.contextmanager
def service(env: Mapping[str, str], queue: str, checkout: Path, log_dir: Path) -> Iterator[Processes]:
    """The API, one worker and the scheduler on ``env``, ready to export."""
    port = int(env["HTTP_PORT"])
    started: list[subprocess.Popen[bytes]] = []
    try:
        for role in ("api", "worker", "scheduler"):
            # Each process serves its metrics on a port of its own.
            role_env = {**env, "METRICS_PORT": str(free_port())}
            started.append(spawn(role, role_env, checkout, log_dir / f"{role}.log"))
        api, worker, scheduler = started
        if not wait_http(f"http://127.0.0.1:{port}/readyz", 60, api):
            log = (log_dir / "api.log").read_text("utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"the API did not become ready:\n{log}")
        wait_consumers(Settings.from_env(env).rabbitmq_url, queue, 1, [worker])
        yield Processes(port, api.pid, worker.pid, scheduler.pid)
    finally:
        for proc in reversed(started):
            stop(proc, timeout=STOP_TIMEOUT)


def reset_peak(pid: int) -> None:
    """Reset another process's VmHWM (the same user may write its clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None) -> Iterator[None]:
    if out is None:
        yield
        return
    venv = Path(sys.executable).parent / "py-spy"
    spy = str(venv) if venv.exists() else "py-spy"
    command = [spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw"]
    proc = subprocess.Popen(
        [*command, "--threads", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    time.sleep(0.5)  # attached before the export starts
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


async def export_once(
    processes: Processes, database_url: str, s3_endpoint: str, org: uuid.UUID, moto_pid: int
) -> dict[str, Any]:
    """One export through the API, measured; the file is checked and removed afterwards."""
    token = mint_token(SECRET, subject="bench", orgs=[org], scopes=[READ, WRITE])
    url = f"http://127.0.0.1:{processes.port}/analytics/v1/orgs/{org}/exports"
    cpu_pids = {"worker": processes.worker, "api": processes.api, "scheduler": processes.scheduler}
    conn = await asyncpg.connect(database_url)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            reset_peak(processes.worker)
            base_rss = status_mib("VmRSS", processes.worker)
            cpu0 = {name: process_cpu(pid) for name, pid in cpu_pids.items()}
            pg0, moto0 = postgres_cpu(), process_cpu(moto_pid)
            posted = time.time()
            async with http.post(url, json=BODY) as response:
                body = await response.json()
                if response.status != 202:
                    raise RuntimeError(f"POST answered {response.status}: {body}")
            accepted = time.time()
            job_id = uuid.UUID(body["jobId"])
            deadline = time.monotonic() + JOB_TIMEOUT
            anon = 0.0  # the private part of the worker's RSS (the rest is shared libraries' pages)
            while True:
                anon = max(anon, status_mib("RssAnon", processes.worker) or 0.0)
                status = await conn.fetchval(
                    "SELECT status FROM analytics.export_jobs WHERE job_id = $1", job_id
                )
                if status not in ("pending", "running"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job_id} still {status} after {JOB_TIMEOUT} s")
                await asyncio.sleep(POLL_INTERVAL)
            peak = status_mib("VmHWM", processes.worker)
            cpu = {name: process_cpu(pid) - cpu0[name] for name, pid in cpu_pids.items()}
            pg, moto = postgres_cpu() - pg0, process_cpu(moto_pid) - moto0
            async with http.get(f"{url}/{job_id}") as response:
                job = await response.json()
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job}")
        events = {
            row["event"]: row["occurred_at"].timestamp() for row in await conn.fetch(EVENT_TIMES, job_id)
        }
    finally:
        await conn.close()
    sha256, size = await download_and_remove(database_url, s3_endpoint, object_key(org, job_id))
    problems = []
    if sha256 != job["checksum"]:
        problems.append("the stored file's SHA-256 is not the job's checksum")
    if size != job["byteCount"]:
        problems.append(f"the stored file is {size} bytes, the job says {job['byteCount']}")
    return {
        "path": "e2e",
        "job_id": str(job_id),
        "rows": job["rowCount"],
        "bytes": size,
        "sha256": sha256,
        "wall_s": events["succeeded"] - posted,
        "post_s": accepted - posted,
        "queued_s": events["started"] - posted,
        "run_s": events["succeeded"] - events["started"],
        "peak_rss_mib": peak,
        "peak_anon_mib": anon,
        "base_rss_mib": base_rss,
        "cpu_s": cpu["worker"],
        "api_cpu_s": cpu["api"],
        "scheduler_cpu_s": cpu["scheduler"],
        "pg_cpu_s": pg,
        "s3_server_cpu_s": moto,
        "problems": problems,
    }


async def download_and_remove(database_url: str, s3_endpoint: str, key: str) -> tuple[str, int]:
    """SHA-256 and size of the stored file; then the bucket is emptied for the next export."""
    async with open_s3_client(bench_settings(database_url, s3_endpoint)) as raw:
        client: Any = raw
        digest, size = hashlib.sha256(), 0
        response = await client.get_object(Bucket=BUCKET, Key=key)
        async with response["Body"] as body:
            while chunk := await body.read(PART_SIZE):
                digest.update(chunk)
                size += len(chunk)
        listing = await client.list_objects_v2(Bucket=BUCKET)
        for obj in listing.get("Contents", []) or []:
            await client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    return digest.hexdigest(), size


def child(
    path: str, size: str, org: uuid.UUID, database_url: str, endpoint: str, moto_pid: int, in_flight: int
) -> dict[str, Any]:
    rows = SIZES[size] * HOURS
    spec = Spec(path, size, database_url, endpoint, moto_pid, str(org), rows, PART_SIZE, in_flight)
    result = spawn_child(spec)
    asyncio.run(download_and_remove_key(database_url, endpoint, result))
    return result


async def download_and_remove_key(database_url: str, endpoint: str, result: dict[str, Any]) -> None:
    """A child's file: its SHA-256 checked against what the child computed, then removed."""
    sha256, size = await download_and_remove(database_url, endpoint, result["key"])
    result["problems"] = (
        []
        if (sha256, size) == (result["sha256"], result["bytes"])
        else [
            f"stored {size} bytes with SHA-256 {sha256}; "
            f"the child sent {result['bytes']} with {result['sha256']}"
        ]
    )


def import_floor() -> dict[str, float | None]:
    """What resident memory a bare interpreter, and one that loaded pyarrow (the tally's CSV
    reader), holds before doing anything: the part of a worker's RSS no export can give back."""

    def rss(code: str) -> float | None:
        probe = (
            f"{code}\nprint([s.split()[1] for s in open('/proc/self/status') if s.startswith('VmRSS')][0])"
        )
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[0]) / 1024 if out.stdout.strip() else None

    bare = rss("pass")
    arrow = rss("import pyarrow.compute, pyarrow.csv")
    return {
        "python_rss_mib": bare,
        "pyarrow_import_mib": None if bare is None or arrow is None else arrow - bare,
    }


def summarise(runs: Sequence[Mapping[str, Any]], sizes: Sequence[str]) -> list[dict[str, Any]]:
    """Per (size, path): medians over the repeats, max peak RSS; ratio of rows/s to A's."""
    rows: list[dict[str, Any]] = []
    for size in sizes:
        for path in PATHS:
            mine = [r for r in runs if r["size"] == size and r["path"] == path]
            if not mine:
                continue

            def median(key: str, runs: Sequence[Mapping[str, Any]] = mine) -> float | None:
                values = [r[key] for r in runs if r.get(key) is not None]
                return statistics.median(values) if values else None

            rows.append(
                {
                    "size": size,
                    "path": path,
                    "repeats": len(mine),
                    "rows": mine[0]["rows"],
                    "mib": mine[0]["bytes"] / MIB,
                    "wall_s": median("wall_s"),
                    "walls_s": [round(r["wall_s"], 3) for r in mine],
                    "run_s": median("run_s"),
                    "queued_s": median("queued_s"),
                    "cpu_s": median("cpu_s"),
                    "pg_cpu_s": median("pg_cpu_s"),
                    "s3_server_cpu_s": median("s3_server_cpu_s"),
                    "peak_rss_mib": max(r["peak_rss_mib"] for r in mine),
                    "peak_anon_mib": max((r.get("peak_anon_mib") or 0.0 for r in mine), default=0.0) or None,
                }
            )
    for row in rows:
        limits = [r for r in rows if r["size"] == row["size"] and r["path"].startswith("A_")]
        limit = next(r for r in limits if r["path"] == "A_psql_copy")
        row["vs_A"] = limit["wall_s"] / row["wall_s"]
        row["vs_faster_A"] = min(r["wall_s"] for r in limits) / row["wall_s"]
        if row["run_s"] is not None:
            row["run_vs_A"] = limit["wall_s"] / row["run_s"]
    return rows


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(summary: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| size | rows | MiB | path | wall s | vs A | vs the faster A | started → succeeded s | vs A | "
        "CPU s | PostgreSQL CPU s | moto CPU s | peak RSS MiB (anonymous, sampled) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary:
        lines.append(
            f"| {r['size']} | {r['rows']:,} | {r['mib']:.1f} | {r['path']} | {fmt(r['wall_s'])} | "
            f"{fmt(r['vs_A'])}x | {fmt(r['vs_faster_A'])}x | {fmt(r['run_s'])} | {fmt(r.get('run_vs_A'))}"
            f"{'x' if r.get('run_vs_A') else ''} | {fmt(r['cpu_s'])} | {fmt(r['pg_cpu_s'])} | "
            f"{fmt(r['s3_server_cpu_s'])} | {fmt(r['peak_rss_mib'], 0)}"
            + (f" ({r['peak_anon_mib']:.0f})" if r.get("peak_anon_mib") else "")
            + " |"
        )
    growth = [r for r in summary if r["path"] == "e2e" and r["size"] in ("small", "large")]
    if len(growth) == 2:
        ratio = growth[1]["peak_rss_mib"] / growth[0]["peak_rss_mib"]
        lines.append(f"\nWorker peak RSS from small to large: {ratio:.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.end_to_end", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="typical,small,large")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-process", action="store_true", help="also bench.run's in-process exporter")
    parser.add_argument(
        "--parts-in-flight",
        type=int,
        default=Settings().export_parts_in_flight,
        help="EXPORT_PARTS_IN_FLIGHT for the worker, and for A and the in-process exporter",
    )
    parser.add_argument("--py-spy", type=Path, help="record the worker during each e2e export here")
    parser.add_argument(
        "--checkout",
        type=Path,
        default=ROOT,
        help="run the service processes from this checkout's code (e.g. a git worktree of an older commit)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the service processes (repeatable), for experiments",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    if unknown := [s for s in sizes if s not in SIZES]:
        raise SystemExit(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")
    # The serial A is a labelled variant: the limit of an uploader with one part in flight.
    paths = [
        p
        for p in PATHS
        if (p != "ours" or args.in_process) and (p != "A_psql_copy_serial" or args.parts_in_flight > 1)
    ]
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    began = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - began:7.1f}s] {message}", file=sys.stderr, flush=True)

    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    queue = f"exports-e2e-{uuid.uuid4().hex[:8]}"
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    floor = import_floor()
    with (
        moto_server() as (endpoint, moto_pid),
        bench_database() as database_url,
        tempfile.TemporaryDirectory(prefix="bench-e2e-") as logs,
    ):
        checkout = args.checkout.resolve()
        if newer := len(load_migrations()) - len(load_migrations(checkout / "migrations")):
            asyncio.run(migrate_down(database_url, newer))  # the schema that checkout's code knows
        orgs = {size: uuid.uuid4() for size in sizes}
        seeded = asyncio.run(prepare(database_url, endpoint, orgs))
        progress(f"seeded {seeded}")
        machine = machine_info(database_url)
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "EXPORT_QUEUE": queue,
            "S3_ENDPOINT": endpoint,
            **S3_KEYS,
            "S3_BUCKET": BUCKET,
            "HTTP_PORT": str(free_port()),
            "AUTH_JWT_SECRET": SECRET,
            "EXPORT_PARTS_IN_FLIGHT": str(args.parts_in_flight),
            **dict(item.split("=", 1) for item in args.set),
        }
        try:
            with service(env, queue, checkout, Path(logs)) as processes:
                floor["worker_at_start_rss_mib"] = status_mib("VmRSS", processes.worker)
                floor["worker_at_start_anon_mib"] = status_mib("RssAnon", processes.worker)
                for size in sizes:
                    org = orgs[size]
                    asyncio.run(export_once(processes, database_url, endpoint, org, moto_pid))  # warm-up
                    for repeat in range(1, args.repeat + 1):
                        for path in paths:
                            if path == "e2e":
                                profile = args.py_spy / f"{size}-{repeat}.folded" if args.py_spy else None
                                with py_spy(processes.worker, profile):
                                    result = asyncio.run(
                                        export_once(processes, database_url, endpoint, org, moto_pid)
                                    )
                            else:
                                result = child(
                                    path, size, org, database_url, endpoint, moto_pid, args.parts_in_flight
                                )
                            result.update(size=size, repeat=repeat)
                            problems += [f"{path}/{size}#{repeat}: {p}" for p in result["problems"]]
                            if result["rows"] != SIZES[size] * HOURS:
                                problems.append(f"{path}/{size}#{repeat}: {result['rows']} rows")
                            runs.append(result)
                            progress(
                                f"{size} {path} #{repeat}: {result['wall_s']:.2f} s"
                                + (
                                    f" (started → succeeded {result['run_s']:.2f} s)"
                                    if "run_s" in result
                                    else ""
                                )
                                + f", peak RSS {result['peak_rss_mib']:.0f} MiB"
                            )
        finally:
            delete_queues(Settings.from_env(env).rabbitmq_url, queue)
    for size in sizes:
        digests = {(r["path"], r["sha256"]) for r in runs if r["size"] == size}
        if len({sha for _, sha in digests}) != 1:
            problems.append(f"{size}: the paths wrote different bytes: {sorted(digests)}")
    summary = summarise(runs, sizes)
    table = markdown(summary)
    print(table)
    print("\nMemory floor (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in floor.items() if v is not None))
    if problems:
        print(f"PROBLEMS: {problems}")
    out = args.out or ROOT / "bench" / "results" / f"end_to_end-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine,
        "memory_floor": floor,
        "code": code_version(),
        "config": {
            "sizes": sizes,
            "repeat": args.repeat,
            "paths": paths,
            "checkout": str(args.checkout.resolve()),
            "service_env": args.set,
            "seeded": seeded,
        },
        "summary": summary,
        "problems": problems,
        "runs": runs,
        "markdown": table,
        "total_seconds": round(time.monotonic() - began, 1),
    }
    out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str))
    print(f"results written to {out}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
