"""Export benchmark: the worker's COPY path beside its baselines, on one PostgreSQL and one S3 server.

    .venv/bin/python -m bench.run [--sizes typical,small,large] [--repeat N] [--out bench/results/latest.json]

The run starts its own moto_server on a free loopback port, creates a fresh database
``analytics_bench_<hex>`` (migrated), seeds one org per size with hourly rollups, then measures
every path for every size ``--repeat`` times, each measurement in a child process of its own so
that CPU seconds and peak RSS belong to that path alone. Everything it started or created is
stopped or dropped at the end. Paths (see docs/performance.md):

- ``ours``          the worker's code: ``Exporter.run`` (claim, COPY ... CSV, 8 MiB parts, SHA-256,
                    the tally, complete, tags if more than one part, manifest, job row) into S3;
- ``ours_csv_gz``, ``ours_parquet``: the same in the other formats;
- ``A_psql_copy``   the limit: ``psql \\copy (same query) to stdout`` piped into a multipart upload
                    with as many parts in flight as the worker (``EXPORT_PARTS_IN_FLIGHT``);
- ``A_psql_copy_serial`` the same, one part at a time (the limit of a serial uploader);
- ``B_cursor_csv``  asyncpg cursor + ``csv.writer``, streamed as 8 MiB parts (the design card's exporter);
- ``C_naive``       fetch every row, build the whole CSV in memory, one ``put_object``;
- ``ours_null``, ``A_null``, ``B_null``: the same read + encode + SHA-256, parts discarded.

The child measures, around the export alone (not its start-up): wall time; CPU (user + sys, its
own and its waited-for children's, e.g. psql); peak RSS of the block (VmHWM, reset at its start;
psql's sampled apart); the time spent awaiting S3 calls; and the CPU the PostgreSQL processes and
the moto server used meanwhile (read from /proc). It prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import hashlib
import importlib.metadata
import io
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit

import asyncpg
import orjson

from devtools.local import fresh_database
from devtools.local import moto_server as local_moto_server
from service.exporter import Exporter
from service.job import ExportFormat, ExportRequest, Granularity, JobStatus
from service.repository import JobRepository, create_pool
from service.rollups import DEFAULT_TABLES
from service.settings import MIB, Settings
from service.sql import rollup_queries
from service.storage import CSV_CONTENT_TYPE, ObjectStore, S3Client, open_s3_client
from tests.support.rollups import HEADER, csv_safe

#: The export queries of the tables this bench makes (`--with-rollups`).
ROLLUP_QUERIES = rollup_queries(DEFAULT_TABLES.placeholders())

ROOT: Final = Path(__file__).resolve().parent.parent
ADMIN_DATABASE_URL: Final = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BUCKET: Final = "analytics-bench"
S3_KEYS: Final = {"S3_ACCESS_KEY": "bench", "S3_SECRET_KEY": "bench-secret"}
PART_SIZE: Final = 8 * MIB
START: Final = datetime(2026, 10, 1, tzinfo=UTC)
HOURS: Final = 744  # the 31 days of October 2026
END: Final = START + timedelta(hours=HOURS)
#: size -> number of models; rows = models x HOURS. "typical" is what finance mostly asks for: a
#: month of a few dozen models, about 1 MB, so one part (its facts go on at creation).
SIZES: Final = {"typical": 20, "small": 200, "large": 2000}
PATHS: Final = (
    "ours",
    "A_psql_copy",
    "A_psql_copy_serial",
    "ours_csv_gz",
    "ours_parquet",
    "B_cursor_csv",
    "C_naive",
    "ours_null",
    "A_null",
    "B_null",
)
#: The worker's path in each format (every other path writes CSV).
OURS: Final = {
    "ours": ExportFormat.CSV,
    "ours_null": ExportFormat.CSV,
    "ours_csv_gz": ExportFormat.CSV_GZ,
    "ours_parquet": ExportFormat.PARQUET,
}
NULL_PATHS: Final = frozenset({"ours_null", "A_null", "B_null"})
#: Rows the asyncpg cursor fetches per round trip (its default, 50, is one round trip per 50 rows).
CURSOR_PREFETCH: Final = 2000
#: Bytes asked of psql's stdout pipe per read.
PIPE_READ: Final = 1 << 20
CHILD_TIMEOUT: Final = 1800.0
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")

#: B and C: the eight columns, same filter and order as export_hourly, formatted in Python.
PLAIN_SELECT: Final = """
SELECT bucket_start, org_id, model_id, request_count, tokens_total, error_count, cost_total, currency
FROM analytics.hourly_rollups
WHERE org_id = $1 AND bucket_start >= $2 AND bucket_start < $3
ORDER BY bucket_start, model_id COLLATE "C", currency
"""
TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"

#: Hourly rollups for org $1: $2 models x $4 hours from $3. Deterministic values of production
#: widths: up to ~100k requests and ~400M tokens an hour, costs up to a few thousand dollars
#: with six significant decimals (numeric(20,6)), model ids like 'claude-sonnet-0042'.
SEED_HOURLY: Final = """
INSERT INTO analytics.hourly_rollups
    (bucket_start, org_id, model_id, request_count, tokens_total, error_count, cost_total, currency)
SELECT $3::timestamptz + h * interval '1 hour', $1::uuid, v.model,
       v.requests, t.tokens, v.requests / 97 + (h + m) % 5,
       round(t.tokens * (15 + (m * 7) % 600) / 10000000.0, 6), 'USD'
FROM generate_series(0, $4::int - 1) AS h,
     generate_series(1, $2::int) AS m,
     LATERAL (SELECT (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet', 'claude-haiku', 'llama-3-70b',
                            'mistral-large', 'gemini-pro', 'embed-v3'])[1 + (m - 1) % 8]
                     || '-' || lpad(m::text, 4, '0') AS model,
                     (50 + (h::bigint * 7919 + m::bigint * 104729) % 99950)::bigint AS requests) AS v,
     LATERAL (SELECT v.requests * (180 + (m * 37) % 4000)::bigint AS tokens) AS t
"""


# --------------------------------------------------------------------------------------------
# Measuring (child side)


def _stat_fields(pid: int | str) -> list[str]:
    """/proc/<pid>/stat fields after the command name: index 0 is field 3 (state)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        return f.read().rsplit(")", 1)[1].split()


def process_cpu(pid: int) -> float:
    """User + system seconds of one process (all its threads)."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu() -> float:
    """User + system seconds of every process named postgres, plus what the postmaster collected
    from backends that already exited (cutime/cstime): the server's CPU, whoever it served."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="ascii", errors="replace") as f:
                if f.read().strip() != "postgres":
                    continue
            fields = _stat_fields(entry)
        except OSError:
            continue
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / CLK_TCK


def own_cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def status_mib(field: str, pid: int | str = "self") -> float | None:
    """A memory line of /proc/<pid>/status (VmRSS, VmHWM) in MiB; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's high-water RSS (VmHWM), so the peak read later belongs to the measured
    block, not to start-up or the parent's image this child was spawned from (ru_maxrss inherits it)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


class Meter:
    """Wall, own CPU, and the PostgreSQL and S3 servers' CPU across the measured block."""

    def __init__(self, s3_server_pid: int) -> None:
        self._s3_pid = s3_server_pid
        self.result: dict[str, object] = {}
        #: Peak RSS of a helper process the path runs (psql for A), sampled while it runs.
        self.helper_peak_rss_mib: float | None = None

    def sample_helper(self, pid: int) -> None:
        peak = status_mib("VmHWM", pid)
        if peak is not None:
            self.helper_peak_rss_mib = max(peak, self.helper_peak_rss_mib or 0.0)

    @contextlib.asynccontextmanager
    async def measure(self) -> AsyncIterator[None]:
        scope = "measured block" if reset_peak_rss() else "process lifetime"
        base_rss = status_mib("VmRSS")
        pg0, s30, cpu0 = postgres_cpu(), process_cpu(self._s3_pid), own_cpu()
        t0 = time.perf_counter()
        yield
        wall = time.perf_counter() - t0
        cpu = own_cpu() - cpu0
        # A psql backend that just exited is reaped by the postmaster (and lands in its cutime)
        # a moment later; the servers are otherwise idle, so a short pause costs no accuracy.
        await asyncio.sleep(0.3)
        self.result = {
            "wall_s": wall,
            "cpu_s": cpu,
            "base_rss_mib": base_rss,
            "peak_rss_mib": status_mib("VmHWM"),
            "peak_rss_scope": scope,
            "helper_peak_rss_mib": self.helper_peak_rss_mib,
            "pg_cpu_s": postgres_cpu() - pg0,
            "s3_server_cpu_s": process_cpu(self._s3_pid) - s30,
        }


class TimedS3:
    """Delegates to an aiobotocore client and adds up the time spent awaiting each operation."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: dict[str, list[float]] = {}

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._client, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                entry = self.calls.setdefault(name, [0, 0.0])
                entry[0] += 1
                entry[1] += time.perf_counter() - began

        return timed

    @property
    def wait_seconds(self) -> float:
        return sum(seconds for _, seconds in self.calls.values())


class NullS3:
    """An S3 client that accepts every call and keeps nothing: the worker's code runs unchanged."""

    async def create_multipart_upload(self, **kwargs: object) -> Mapping[str, object]:
        return {"UploadId": "null-upload"}

    async def upload_part(self, **kwargs: object) -> Mapping[str, object]:
        return {"ETag": f'"null-{kwargs["PartNumber"]}"'}

    async def complete_multipart_upload(self, **kwargs: object) -> Mapping[str, object]:
        return {"ETag": '"null"'}

    async def abort_multipart_upload(self, **kwargs: object) -> Mapping[str, object]:
        return {}

    async def put_object_tagging(self, **kwargs: object) -> Mapping[str, object]:
        return {}

    async def put_object(self, **kwargs: object) -> Mapping[str, object]:
        return {}

    async def delete_object(self, **kwargs: object) -> Mapping[str, object]:
        return {}

    async def head_bucket(self, **kwargs: object) -> Mapping[str, object]:
        return {}

    async def create_bucket(self, **kwargs: object) -> Mapping[str, object]:
        return {}

    async def list_multipart_uploads(self, **kwargs: object) -> Mapping[str, object]:
        return {}

    async def generate_presigned_url(
        self, ClientMethod: str, Params: Mapping[str, object], ExpiresIn: int
    ) -> str:
        return "null://"


class PartWriter:
    """A and B: bytes buffered into parts of ``part_size``, SHA-256 over exactly those bytes,
    up to ``in_flight`` parts uploading while the next fills (as the worker does: ``write``
    waits, oldest first, while that many are on their way), or dropped when ``client`` is None."""

    def __init__(
        self, client: TimedS3 | None, bucket: str, key: str, part_size: int, in_flight: int = 1
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._part_size = part_size
        self._in_flight = max(1, in_flight)
        self._pending: list[asyncio.Task[None]] = []
        self._buffer = bytearray()
        self._parts: list[dict[str, object]] = []
        self._sha256 = hashlib.sha256()
        self._upload_id: str | None = None
        self.byte_count = 0
        self.completed = False

    @property
    def parts(self) -> int:
        return len(self._parts)

    @property
    def checksum(self) -> str:
        return self._sha256.hexdigest()

    async def start(self) -> None:
        if self._client is not None:
            response = await self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType=CSV_CONTENT_TYPE
            )
            self._upload_id = str(response["UploadId"])

    async def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= self._part_size:
            await self._flush()

    async def _flush(self) -> None:
        body, self._buffer = self._buffer, bytearray()
        self._sha256.update(body)
        self.byte_count += len(body)
        part: dict[str, object] = {"PartNumber": len(self._parts) + 1}
        self._parts.append(part)
        if self._client is not None:
            self._pending.append(asyncio.create_task(self._send(self._client, part, body)))
        await self._drain(keep=self._in_flight - 1)

    async def _send(self, client: TimedS3, part: dict[str, object], body: bytearray) -> None:
        response = await client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=part["PartNumber"],
            Body=body,
        )
        part["ETag"] = response["ETag"]

    async def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            await self._pending.pop(0)

    async def finish(self) -> None:
        if self._buffer or not self._parts:
            await self._flush()
        await self._drain(keep=0)
        if self._client is not None:
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self.completed = True

    async def abort(self) -> None:
        pending, self._pending = self._pending, []
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
        if self._client is not None and self._upload_id is not None and not self.completed:
            with contextlib.suppress(Exception):
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )


@dataclass(frozen=True, slots=True)
class Spec:
    """What one child measures."""

    path: str
    size: str
    database_url: str
    s3_endpoint: str
    s3_server_pid: int
    org_id: str
    expected_rows: int
    part_size: int
    parts_in_flight: int = Settings().export_parts_in_flight


def bench_settings(
    database_url: str, s3_endpoint: str, part_size: int = PART_SIZE, parts_in_flight: int | None = None
) -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "S3_ENDPOINT": s3_endpoint,
            "S3_BUCKET": BUCKET,
            "EXPORT_PART_SIZE": str(part_size),
            "EXPORT_PARTS_IN_FLIGHT": str(parts_in_flight or Settings().export_parts_in_flight),
            **S3_KEYS,
        }
    )


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def literal_export_query(org_id: uuid.UUID, start: datetime, end: datetime) -> str:
    """export_hourly with its parameters as SQL literals (UTC), on one line (psql's \\copy reads
    one line)."""
    literals = {
        "1": f"{sql_literal(str(org_id))}::uuid",
        "2": f"{sql_literal(start.isoformat())}::timestamptz",
        "3": f"{sql_literal(end.isoformat())}::timestamptz",
        "4": "NULL",
        "5": "'UTC'::text",
        "6": "true",
    }
    sql = re.sub(r"\$(\d+)(?!\d)", lambda m: literals[m.group(1)], ROLLUP_QUERIES["export_hourly"])
    return " ".join(line.strip() for line in sql.splitlines())


def format_row(record: asyncpg.Record) -> tuple[object, ...]:
    """One rollup as the export formats it: UTC timestamp with Z, csv_safe model id, exact
    numeric text for the cost (never a float), its currency."""
    return (
        record[0].strftime(TIMESTAMP_FORMAT),
        str(record[1]),
        csv_safe(record[2]),
        record[3],
        record[4],
        record[5],
        format(record[6], "f"),
        record[7],
    )


async def run_ours(spec: Spec, meter: Meter) -> dict[str, object]:
    """Exactly the worker's path: Settings, pool, S3 client, a created job, Exporter.run."""
    settings = bench_settings(spec.database_url, spec.s3_endpoint, spec.part_size, spec.parts_in_flight)
    pool = await create_pool(settings.database_url, max_size=settings.export_worker_concurrency + 2)
    try:
        async with contextlib.AsyncExitStack() as stack:
            timed: TimedS3 | None = None
            client: S3Client
            if spec.path in NULL_PATHS:
                client = NullS3()
            else:
                timed = TimedS3(await stack.enter_async_context(open_s3_client(settings)))
                client = cast(S3Client, timed)
            repository = JobRepository(pool, tables=DEFAULT_TABLES)
            store = ObjectStore.from_settings(client, settings)
            exporter = Exporter(repository, store, settings, worker_name=f"bench:{os.getpid()}")
            org = uuid.UUID(spec.org_id)
            output_format = OURS[spec.path]
            request = ExportRequest(
                org, "bench", START, END, Granularity.HOURLY, None, output_format=output_format
            )
            job_id = (await repository.create(request)).job.job_id
            async with meter.measure():
                job = await exporter.run(job_id)
            if job is None or job.status is not JobStatus.SUCCEEDED:
                raise RuntimeError(f"export job did not succeed: {job}")
            if job.row_count != spec.expected_rows:
                raise RuntimeError(f"job row_count {job.row_count} != {spec.expected_rows} seeded rows")
            found = await repository.get_manifest(org, job_id)
            if found is None or found[1] is None:
                raise RuntimeError("the succeeded export has no manifest")
            [facts] = orjson.loads(found[1])["files"]
            return {
                "rows": job.row_count,
                "bytes": job.byte_count,
                "sha256": job.checksum,
                # What the file holds, to compare across paths: the CSV's SHA-256 (for csv.gz, of
                # the content); Parquet holds the same rows, not the same bytes.
                "content_sha256": {
                    ExportFormat.CSV: job.checksum,
                    ExportFormat.CSV_GZ: (facts.get("uncompressed") or {}).get("sha256"),
                    ExportFormat.PARQUET: None,
                }[output_format],
                "key": None if timed is None else job.object_key,
                "manifest_key": None if timed is None else job.manifest_key,
                "s3_calls": {} if timed is None else timed.calls,
                "s3_wait_s": 0.0 if timed is None else timed.wait_seconds,
            }
    finally:
        await pool.close()


async def run_psql(
    spec: Spec, meter: Meter, client: TimedS3 | None, key: str, in_flight: int
) -> dict[str, object]:
    """A: psql's \\copy of the same query, its stdout piped into 8 MiB parts, ``in_flight`` at once."""
    url = urlsplit(spec.database_url)
    command = (
        f"\\copy ({literal_export_query(uuid.UUID(spec.org_id), START, END)}) "
        "to stdout with (format csv, header)"
    )
    argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", url.hostname or "127.0.0.1"]
    argv += ["-p", str(url.port or 5432), "-U", url.username or "postgres", "-d", url.path.lstrip("/")]
    writer = PartWriter(client, BUCKET, key, spec.part_size, in_flight)
    newlines = 0
    try:
        async with meter.measure():
            await writer.start()
            proc = await asyncio.create_subprocess_exec(
                *argv, "-c", command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            assert proc.stdout is not None
            assert proc.stderr is not None
            while chunk := await proc.stdout.read(PIPE_READ):
                newlines += chunk.count(b"\n")
                meter.sample_helper(proc.pid)
                await writer.write(chunk)
            meter.sample_helper(proc.pid)
            errors = await proc.stderr.read()
            if await proc.wait() != 0:
                raise RuntimeError(f"psql failed ({proc.returncode}): {errors.decode(errors='replace')}")
            await writer.finish()
    finally:
        await writer.abort()
    return {
        # psql does not print COPY's row count when it writes to stdout; these model ids hold no
        # line breaks, so data rows are lines minus the header.
        "rows": newlines - 1,
        "bytes": writer.byte_count,
        "sha256": writer.checksum,
        "parts": writer.parts,
    }


async def run_cursor(
    spec: Spec, meter: Meter, client: TimedS3 | None, key: str, in_flight: int
) -> dict[str, object]:
    """B: asyncpg cursor in a read-only repeatable-read transaction, csv.writer, 8 MiB parts."""
    conn = await asyncpg.connect(spec.database_url)
    writer = PartWriter(client, BUCKET, key, spec.part_size, in_flight)
    rows = 0
    try:
        async with meter.measure():
            await writer.start()
            buffer = io.StringIO()
            out = csv.writer(buffer, lineterminator="\n")
            out.writerow(HEADER)
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                cursor = conn.cursor(
                    PLAIN_SELECT, uuid.UUID(spec.org_id), START, END, prefetch=CURSOR_PREFETCH
                )
                async for record in cursor:
                    out.writerow(format_row(record))
                    rows += 1
                    if buffer.tell() >= spec.part_size:
                        await writer.write(buffer.getvalue().encode())
                        buffer.seek(0)
                        buffer.truncate()
            await writer.write(buffer.getvalue().encode())
            await writer.finish()
    finally:
        await writer.abort()
        await conn.close()
    return {"rows": rows, "bytes": writer.byte_count, "sha256": writer.checksum, "parts": writer.parts}


async def run_naive(spec: Spec, meter: Meter, client: TimedS3, key: str) -> dict[str, object]:
    """C: every row fetched, the whole CSV built in memory, one put_object."""
    conn = await asyncpg.connect(spec.database_url)
    try:
        async with meter.measure():
            records = await conn.fetch(PLAIN_SELECT, uuid.UUID(spec.org_id), START, END)
            buffer = io.StringIO()
            out = csv.writer(buffer, lineterminator="\n")
            out.writerow(HEADER)
            for record in records:
                out.writerow(format_row(record))
            body = buffer.getvalue().encode()
            checksum = hashlib.sha256(body).hexdigest()
            await client.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType=CSV_CONTENT_TYPE)
    finally:
        await conn.close()
    return {"rows": len(records), "bytes": len(body), "sha256": checksum, "parts": 1}


async def run_child(spec: Spec) -> dict[str, object]:
    meter = Meter(spec.s3_server_pid)
    if spec.path in OURS:
        outcome = await run_ours(spec, meter)
    else:
        key = f"bench/{spec.size}/{spec.path}/{uuid.uuid4()}.csv"
        settings = bench_settings(spec.database_url, spec.s3_endpoint, spec.part_size, spec.parts_in_flight)
        async with contextlib.AsyncExitStack() as stack:
            timed = None
            if spec.path not in NULL_PATHS:
                timed = TimedS3(await stack.enter_async_context(open_s3_client(settings)))
            in_flight = settings.export_parts_in_flight
            if spec.path in ("A_psql_copy", "A_null"):
                outcome = await run_psql(spec, meter, timed, key, in_flight)
            elif spec.path == "A_psql_copy_serial":
                outcome = await run_psql(spec, meter, timed, key, 1)
            elif spec.path in ("B_cursor_csv", "B_null"):
                outcome = await run_cursor(spec, meter, timed, key, in_flight)
            elif spec.path == "C_naive":
                assert timed is not None
                outcome = await run_naive(spec, meter, timed, key)
            else:
                raise ValueError(f"unknown path {spec.path!r}")
            outcome["key"] = None if timed is None else key
            outcome["s3_calls"] = {} if timed is None else timed.calls
            outcome["s3_wait_s"] = 0.0 if timed is None else timed.wait_seconds
    return {"path": spec.path, "size": spec.size, **outcome, **meter.result}


def child_main(raw: str) -> int:
    spec = Spec(**orjson.loads(raw))
    result = asyncio.run(run_child(spec))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


# --------------------------------------------------------------------------------------------
# Orchestration (parent side)


@contextlib.contextmanager
def moto_server() -> Iterator[tuple[str, int]]:
    """Our own moto S3 server on a free loopback port: (endpoint, pid)."""
    with local_moto_server() as (endpoint, proc):
        yield endpoint, proc.pid


def bench_database() -> contextlib.AbstractContextManager[str]:
    """A fresh migrated database ``analytics_bench_<hex>``, dropped afterwards."""
    return fresh_database(ADMIN_DATABASE_URL, "analytics_bench")


async def prepare(database_url: str, s3_endpoint: str, orgs: Mapping[str, uuid.UUID]) -> dict[str, object]:
    """Create the bucket, seed each size's org, and settle the table (vacuum, analyze, checkpoint)."""
    async with open_s3_client(bench_settings(database_url, s3_endpoint)) as client:
        await client.create_bucket(Bucket=BUCKET)
    conn = await asyncpg.connect(database_url)
    seeded: dict[str, object] = {}
    try:
        for size, org in orgs.items():
            began = time.perf_counter()
            status = await conn.execute(SEED_HOURLY, org, SIZES[size], START, HOURS, timeout=1800)
            seeded[size] = {
                "org_id": str(org),
                "models": SIZES[size],
                "hours": HOURS,
                "rows": int(status.split()[-1]),
                "seed_s": round(time.perf_counter() - began, 2),
            }
        await conn.execute("VACUUM (ANALYZE) analytics.hourly_rollups", timeout=1800)
        await conn.execute("CHECKPOINT", timeout=600)
        seeded["table_size_mib"] = round(
            await conn.fetchval("SELECT pg_total_relation_size('analytics.hourly_rollups')") / MIB, 1
        )
    finally:
        await conn.close()
    return seeded


async def server_facts(database_url: str) -> dict[str, object]:
    conn = await asyncpg.connect(database_url)
    try:
        facts: dict[str, object] = {"postgresql_server_version": await conn.fetchval("SHOW server_version")}
        for name in ("shared_buffers", "work_mem", "max_parallel_workers_per_gather"):
            facts[f"postgresql_{name}"] = await conn.fetchval(f"SHOW {name}")
        return facts
    finally:
        await conn.close()


def machine_info(database_url: str) -> dict[str, object]:
    cpu_model, mem_total = "unknown", 0
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1])
    psql = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=False)
    versions = {
        name: importlib.metadata.version(name)
        for name in ("asyncpg", "aiobotocore", "botocore", "moto", "orjson")
    }
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_total_mib": mem_total // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **asyncio.run(server_facts(database_url)),
        "psql": psql.stdout.strip(),
        **versions,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def spawn_child(spec: Spec) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON line."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--child", orjson.dumps(asdict(spec)).decode()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{spec.path}/{spec.size} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return cast(dict[str, Any], orjson.loads(lines[-1]))


async def check_and_clear_bucket(
    database_url: str, s3_endpoint: str, result: Mapping[str, Any], download: bool
) -> list[str]:
    """Compare what is in the bucket with what the child says it uploaded (size; on ``download``
    the SHA-256 of the stored bytes too; for ours the checksum tag and the manifest), then empty
    the bucket. Returns the problems found."""
    problems: list[str] = []
    async with open_s3_client(bench_settings(database_url, s3_endpoint)) as raw:
        client: Any = raw
        objects: list[Mapping[str, Any]] = []
        token: dict[str, str] = {}
        while True:
            page = await client.list_objects_v2(Bucket=BUCKET, **token)
            objects += page.get("Contents", []) or []
            if not page.get("IsTruncated"):
                break
            token = {"ContinuationToken": page["NextContinuationToken"]}
        expected = sorted(key for key in (result["key"], result.get("manifest_key")) if key is not None)
        found = sorted(str(o["Key"]) for o in objects)
        if found != expected:
            problems.append(f"bucket holds {found}, expected {expected}")
        for obj in objects:
            if obj["Key"] != result["key"]:
                continue
            if int(obj["Size"]) != result["bytes"]:
                problems.append(f"stored object is {obj['Size']} bytes, the child sent {result['bytes']}")
            if result["path"] in OURS:
                tagging = await client.get_object_tagging(Bucket=BUCKET, Key=obj["Key"])
                tags = {tag["Key"]: tag["Value"] for tag in tagging["TagSet"]}
                if tags.get("sha256") != result["sha256"]:
                    problems.append("the object's sha256 tag differs from the job's checksum")
            if download:
                response = await client.get_object(Bucket=BUCKET, Key=obj["Key"])
                digest = hashlib.sha256()
                async with response["Body"] as body:
                    while chunk := await body.read(PART_SIZE):
                        digest.update(chunk)
                if digest.hexdigest() != result["sha256"]:
                    problems.append(
                        "SHA-256 of the stored object differs from the one computed while sending"
                    )
        for obj in objects:
            await client.delete_object(Bucket=BUCKET, Key=obj["Key"])
        uploads = await client.list_multipart_uploads(Bucket=BUCKET)
        for upload in uploads.get("Uploads", []) or []:
            problems.append(f"incomplete multipart upload left: {upload['Key']}")
            await client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
    return problems


def summarise(runs: Sequence[Mapping[str, Any]], sizes: Sequence[str]) -> list[dict[str, Any]]:
    """Per (path, size): the run with the median wall time (median_low: an actual run), the max
    peak RSS over all repeats, and the ratio of rows/s to A (same size, same kind of sink)."""
    rows: list[dict[str, Any]] = []
    for size in sizes:
        for path in PATHS:
            mine = [r for r in runs if r["path"] == path and r["size"] == size]
            if not mine:
                continue
            median_wall = statistics.median_low([r["wall_s"] for r in mine])
            chosen = next(r for r in mine if r["wall_s"] == median_wall)
            rows.append(
                {
                    "path": path,
                    "size": size,
                    "sink": "null" if path in NULL_PATHS else "s3",
                    "repeats": len(mine),
                    "rows": chosen["rows"],
                    "bytes": chosen["bytes"],
                    "wall_s": median_wall,
                    "walls_s": [r["wall_s"] for r in mine],
                    "rows_per_s": chosen["rows"] / median_wall,
                    "mib_per_s": chosen["bytes"] / MIB / median_wall,
                    "cpu_s": chosen["cpu_s"],
                    "pg_cpu_s": chosen["pg_cpu_s"],
                    "s3_server_cpu_s": chosen["s3_server_cpu_s"],
                    "s3_wait_s": chosen["s3_wait_s"],
                    "s3_calls": chosen["s3_calls"],
                    "peak_rss_mib": max(r["peak_rss_mib"] for r in mine),
                    "helper_peak_rss_mib": max(
                        (r["helper_peak_rss_mib"] for r in mine if r["helper_peak_rss_mib"] is not None),
                        default=None,
                    ),
                    "base_rss_mib": chosen["base_rss_mib"],
                }
            )
    for row in rows:
        baseline = "A_null" if row["sink"] == "null" else "A_psql_copy"
        ref = next((r for r in rows if r["path"] == baseline and r["size"] == row["size"]), None)
        row["vs_A"] = row["rows_per_s"] / ref["rows_per_s"] if ref else None
    return rows


def cross_check(runs: Sequence[Mapping[str, Any]], sizes: Sequence[str]) -> dict[str, Any]:
    """Whether every path wrote the same rows for the same size: the same CSV bytes (for csv.gz,
    once decompressed; Parquet: the same row count)."""
    report: dict[str, Any] = {}
    for size in sizes:
        per_path: dict[str, Any] = {}
        for path in PATHS:
            mine = [r for r in runs if r["path"] == path and r["size"] == size]
            if mine:
                per_path[path] = {
                    "rows": sorted({r["rows"] for r in mine}),
                    "content_sha256": sorted({r.get("content_sha256", r["sha256"]) for r in mine}, key=str),
                }
        reference = per_path.get("A_psql_copy") or next(iter(per_path.values()))
        differing = [
            p
            for p, facts in per_path.items()
            if facts["rows"] != reference["rows"]
            or (facts["content_sha256"] != [None] and facts["content_sha256"] != reference["content_sha256"])
        ]
        report[size] = {"identical": not differing, "differing_from_A": differing, "paths": per_path}
    return report


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def markdown(summary: Sequence[Mapping[str, Any]], checks: Mapping[str, Any]) -> str:
    lines = [
        "| path | size | rows | MiB | wall s | rows/s | MiB/s | CPU s (child) | peak RSS MiB "
        "| RSS at start MiB | rows/s vs A |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary:
        helper = "" if r["helper_peak_rss_mib"] is None else f" + {r['helper_peak_rss_mib']:.0f} psql"
        lines.append(
            f"| {r['path']} | {r['size']} | {r['rows']:,} | {fmt(r['bytes'] / MIB, 1)} | "
            f"{fmt(r['wall_s'])} | {fmt(r['rows_per_s'], 0)} | {fmt(r['mib_per_s'], 1)} | "
            f"{fmt(r['cpu_s'])} | {fmt(r['peak_rss_mib'], 0)}{helper} | {fmt(r['base_rss_mib'], 0)} | "
            f"{fmt(r['vs_A'])}x |"
        )
    lines += [
        "",
        "Where the time goes (same median runs): seconds awaiting S3 calls in the child; CPU seconds",
        "the PostgreSQL processes and the moto server used during the measured block; their sum",
        "with the child's CPU.",
        "",
        "| path | size | wall s | S3 wait s | PostgreSQL CPU s | moto CPU s | total CPU s "
        "| S3 calls (count/s) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in summary:
        calls = ", ".join(
            f"{name} {int(count)}/{seconds:.2f}" for name, (count, seconds) in sorted(r["s3_calls"].items())
        )
        lines.append(
            f"| {r['path']} | {r['size']} | {fmt(r['wall_s'])} | {fmt(r['s3_wait_s'])} | "
            f"{fmt(r['pg_cpu_s'])} | {fmt(r['s3_server_cpu_s'])} | "
            f"{fmt(r['cpu_s'] + r['pg_cpu_s'] + r['s3_server_cpu_s'])} | {calls or '-'} |"
        )
    lines.append("")
    for size, check in checks.items():
        verdict = (
            "the same rows on every path (identical CSV bytes; csv.gz once decompressed)"
            if check["identical"]
            else ("ROWS DIFFER: " + ", ".join(check["differing_from_A"]) + " differ from A_psql_copy")
        )
        lines.append(f"- {size}: {verdict}")
        for path, facts in check["paths"].items():
            content = ", ".join(str(sha) for sha in facts["content_sha256"])
            lines.append(f"  - {path}: rows {facts['rows']}, CSV sha256 {content}")
    return "\n".join(lines)


def bench_main(args: argparse.Namespace) -> int:
    began = time.monotonic()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        raise SystemExit(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    paths = [p.strip() for p in args.paths.split(",") if p.strip()] if args.paths else list(PATHS)
    if unknown_paths := [p for p in paths if p not in PATHS]:
        raise SystemExit(f"unknown path(s) {unknown_paths}; choose from {', '.join(PATHS)}")
    part_size = int(args.part_size * MIB)
    if part_size < 5 * MIB:
        raise SystemExit("--part-size must be at least 5 (MiB; S3's smallest part)")

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks: child, database, moto

    signal.signal(signal.SIGTERM, terminated)

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - began:7.1f}s] {message}", file=sys.stderr, flush=True)

    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    with moto_server() as (endpoint, moto_pid), bench_database() as database_url:
        progress(f"moto_server at {endpoint}, database {urlsplit(database_url).path.lstrip('/')}")
        orgs = {size: uuid.uuid4() for size in sizes}
        seeded = asyncio.run(prepare(database_url, endpoint, orgs))
        progress(f"seeded: {seeded}")
        machine = machine_info(database_url)

        def spec(path: str, size: str) -> Spec:
            return Spec(
                path,
                size,
                database_url,
                endpoint,
                moto_pid,
                str(orgs[size]),
                SIZES[size] * HOURS,
                part_size,
                args.parts_in_flight,
            )

        for size in sizes:
            spawn_child(spec("A_null", size))  # warm-up, not recorded: rollups into the page cache
            for repeat in range(args.repeat):
                for path in paths:
                    result = spawn_child(spec(path, size))
                    result["repeat"] = repeat + 1
                    found = asyncio.run(check_and_clear_bucket(database_url, endpoint, result, repeat == 0))
                    result["problems"] = found
                    problems += [f"{path}/{size}#{repeat + 1}: {p}" for p in found]
                    if result["rows"] != SIZES[size] * HOURS:
                        problems.append(f"{path}/{size}#{repeat + 1}: {result['rows']} rows, not the seeded")
                    runs.append(result)
                    progress(
                        f"{size} {path} #{repeat + 1}: {result['wall_s']:.2f} s, "
                        f"{result['rows'] / result['wall_s']:,.0f} rows/s, cpu {result['cpu_s']:.2f} s, "
                        f"rss {result['peak_rss_mib']:.0f} MiB"
                    )

    summary = summarise(runs, sizes)
    checks = cross_check(runs, sizes)
    problems += [
        f"{size}: bytes differ on {', '.join(c['differing_from_A'])}"
        for size, c in checks.items()
        if not c["identical"]
    ]
    elapsed = time.monotonic() - began
    table = markdown(summary, checks)
    print(table)
    print(f"\ntotal run time {elapsed:.0f} s" + (f"; PROBLEMS: {problems}" if problems else ""))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine,
        "config": {
            "sizes": sizes,
            "repeat": args.repeat,
            "part_size": part_size,
            "parts_in_flight": args.parts_in_flight,
            "paths": paths,
            "range": [START.isoformat(), END.isoformat()],
            "cursor_prefetch": CURSOR_PREFETCH,
            "seeded": seeded,
        },
        "summary": summary,
        "cross_check": checks,
        "problems": problems,
        "runs": runs,
        "markdown": table,
        "total_seconds": round(elapsed, 1),
    }
    out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print(f"results written to {out}", file=sys.stderr)
    return 1 if problems else 0


#: A sized bench's measurement: (database URL, sizes, rounds, problems found) -> its results.
SizedRun = Callable[[str, list[str], int, list[str]], Awaitable[dict[str, Any]]]


def sized_main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str | None,
    out: str,
    measure: SizedRun,
    table: Callable[[list[str], dict[str, Any]], str],
    period: tuple[datetime, datetime],
) -> int:
    """The command line of a bench over SIZES on a fresh database (``--sizes``, ``--rounds``,
    ``--out``): ``measure`` runs, ``table`` of its results is printed, the whole is written as JSON
    to ``out`` with the machine; exit 1 if ``measure`` found problems."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated: {', '.join(SIZES)}")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds of every path per size")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / out))
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if not sizes or any(s not in SIZES for s in sizes) or args.rounds < 1:
        raise SystemExit(f"--sizes: some of {', '.join(SIZES)}; --rounds: at least 1")
    began, load = time.monotonic(), os.getloadavg()
    problems: list[str] = []
    with bench_database() as url:
        machine = machine_info(url)
        run = asyncio.run(measure(url, sizes, args.rounds, problems))
    machine["loadavg_before_after"] = [load, os.getloadavg()]
    print(table(sizes, run))
    print(f"\nmachine: {machine}\nrun time {time.monotonic() - began:.0f} s")
    document = {"machine": machine, "rounds": args.rounds, "range": [str(t) for t in period], **run}
    document |= {"problems": problems, "at": datetime.now().astimezone().isoformat(timespec="seconds")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    if problems:
        print("PROBLEMS:\n" + "\n".join(problems), file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description="Export benchmark: ours beside its baselines."
    )
    parser.add_argument(
        "--sizes", default="typical,small,large", help="comma-separated: typical, small, large"
    )
    parser.add_argument("--repeat", type=int, default=3, help="measurements per path and size")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument("--paths", default="", help=f"comma-separated subset of: {', '.join(PATHS)}")
    parser.add_argument("--part-size", type=float, default=PART_SIZE / MIB, help="MiB per part, every path")
    parser.add_argument(
        "--parts-in-flight",
        type=int,
        default=Settings().export_parts_in_flight,
        help="parts uploading at once (EXPORT_PARTS_IN_FLIGHT) for ours, A and B",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child_main(args.child)
    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
