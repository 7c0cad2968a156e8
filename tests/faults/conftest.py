"""A cluster of real processes (api, scheduler, two workers) whose every connection to
PostgreSQL, RabbitMQ and S3 runs through a FaultProxy the tests can cut, blackhole or throttle.

Assertions look at the truth directly (the job table over a direct connection, the bucket on
the S3 server itself), never only at what the API says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest
from botocore.exceptions import ClientError

from actors.broker import create_broker
from devtools.local import free_port, wait_http
from service.api.auth import READ, WRITE, mint_token
from service.job import object_key
from service.settings import Settings
from service.storage import S3Client, open_s3_client
from tests.conftest import (
    BIN,
    BUCKET,
    OVERRIDE_BUCKET,
    RABBITMQ_URL,
    fresh_database,
    service_env,
)
from tests.faults.proxy import FaultProxy
from tests.support.rabbitmq import quorum_vhost

SECRET = "faults-secret-that-is-at-least-32-bytes-long"
#: Settings that make faults show within seconds: a 3 s lease, a 1 s sweep, a 20 s retry window.
FAULT_SETTINGS = {
    "EXPORT_WORKER_INTERVAL": "1s",
    "EXPORT_LEASE_TTL": "3s",
    "EXPORT_RETRY_WINDOW": "20s",
    "EXPORT_MAX_ATTEMPTS": "3",
    "EXPORT_SHUTDOWN_GRACE": "2s",
    # The burst puts 10 jobs per org in flight at once.
    "EXPORT_MAX_ACTIVE_PER_ORG": "10",
}


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@dataclass
class Cluster:
    base: str
    env: dict[str, str]
    direct: Settings  # the same settings with direct connections, for the tests' own checks
    logs: Path
    pg: FaultProxy
    rabbit: FaultProxy
    s3: FaultProxy
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, role: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{role}-{len(self.workers) + len(self.others)}.log").open("wb")
        proc = subprocess.Popen([str(BIN / "analytics-exports"), role], env=self.env, stdout=log, stderr=log)
        (self.workers if role == "worker" else self.others).append(proc)
        return proc

    def assert_others_alive(self) -> None:
        """The API and the scheduler still run (workers may be killed on purpose)."""
        for proc in self.others:
            assert proc.poll() is None, f"{proc.args[-1]} exited with {proc.returncode}\n{self.log_tail()}"

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        return [w for w in self.workers if w.poll() is None]

    def ensure_workers(self, count: int = 2) -> None:
        for _ in range(count - len(self.live_workers())):
            self.spawn("worker")

    def heal(self) -> None:
        for proxy in (self.pg, self.rabbit, self.s3):
            proxy.restore()
            proxy.release()
            proxy.set_delay(0)
            proxy.set_rate(None)

    def auth(self, org: uuid.UUID) -> dict[str, str]:
        token = mint_token(SECRET, subject="faults", orgs=[org], scopes=[READ, WRITE])
        return {"Authorization": f"Bearer {token}"}

    def queue_counts(self) -> tuple[int, int, int]:
        """Messages in the cluster's queue, its delay queue (.DQ) and its dead letters (.XQ)."""
        broker = create_broker(self.direct)
        try:
            counts: tuple[int, int, int] = broker.get_queue_message_counts(self.direct.queue_name)
            return counts
        finally:
            broker.close()

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(self.logs.iterdir())
        )


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The processes, for one test module, on a database of their own."""
    with fresh_database("analytics_faults") as database_url:
        yield from _run_cluster(database_url, s3_endpoint, tmp_path_factory)


@pytest.fixture
def settings(cluster: Cluster) -> Settings:
    """The cluster's direct settings: clean_state then empties the cluster's own database."""
    return cluster.direct


def _run_cluster(
    database_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The processes against a vhost of their own whose queues are quorum queues, as a RabbitMQ
    cluster should run them (docs/operations.md)."""
    with quorum_vhost(RABBITMQ_URL) as rabbitmq_url:
        yield from _run_processes(database_url, rabbitmq_url, s3_endpoint, tmp_path_factory)


def _run_processes(
    database_url: str, rabbitmq_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    queue = f"exports-faults-{uuid.uuid4().hex[:8]}"
    direct_env = service_env(
        database_url, s3_endpoint, queue, **FAULT_SETTINGS, AUTH_JWT_SECRET=SECRET, RABBITMQ_URL=rabbitmq_url
    )
    pg = FaultProxy("127.0.0.1", _port(database_url)).start()
    rabbit = FaultProxy("127.0.0.1", _port(direct_env["RABBITMQ_URL"])).start()
    s3 = FaultProxy("127.0.0.1", _port(s3_endpoint)).start()
    port = free_port()
    env = {
        **os.environ,
        **direct_env,
        "DATABASE_URL": pg.url_for(database_url),
        "RABBITMQ_URL": rabbit.url_for(direct_env["RABBITMQ_URL"]),
        "S3_ENDPOINT": s3.url_for(s3_endpoint),
        "HTTP_PORT": str(port),
    }
    cluster = Cluster(
        f"http://127.0.0.1:{port}",
        env,
        Settings.from_env(direct_env),
        tmp_path_factory.mktemp("fault-logs"),
        pg,
        rabbit,
        s3,
    )
    asyncio.run(_create_buckets(cluster.direct))
    for role in ("api", "scheduler", "worker", "worker"):
        cluster.spawn(role)
    try:
        assert wait_http(cluster.base + "/healthz", timeout=30), cluster.log_tail()
        yield cluster
    finally:
        for proc in cluster.workers + cluster.others:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in cluster.workers + cluster.others:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for proxy in (pg, rabbit, s3):
            proxy.stop()


async def _create_buckets(settings: Settings) -> None:
    async with open_s3_client(settings) as client:
        for bucket in (BUCKET, OVERRIDE_BUCKET):
            with contextlib.suppress(ClientError):
                await client.create_bucket(Bucket=bucket)


@pytest.fixture
def healthy(cluster: Cluster, clean_state: None) -> Iterator[Cluster]:
    """Every test starts with clean state, working connections and two live workers, and leaves
    the proxies healed for the next one."""
    cluster.heal()
    cluster.ensure_workers()
    cluster.assert_others_alive()
    yield cluster
    cluster.heal()
    cluster.assert_others_alive()  # a fault must not end the API or the scheduler


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def db(cluster: Cluster) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(cluster.direct.database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def bucket(cluster: Cluster) -> AsyncIterator[S3Client]:
    async with open_s3_client(cluster.direct) as client:
        yield client


async def seed_hours(db: asyncpg.Connection, org: uuid.UUID, models: int, hours: int = 744) -> None:
    """``models`` x ``hours`` hourly rollups from 2026-10-01 (200 x 744 is about 15 MiB of CSV)."""
    await db.execute(
        """INSERT INTO analytics.hourly_rollups
           SELECT '2026-10-01T00:00:00Z'::timestamptz + h * interval '1 hour', $1,
                  'model-' || lpad(m::text, 4, '0'), h + m, (h + m) * 100, m % 3,
                  ((h * 7 + m) % 100000) / 1000.0, 'USD'
           FROM generate_series(0, $3 - 1) h, generate_series(1, $2) m""",
        org,
        models,
        hours,
    )
    await db.execute(
        """INSERT INTO analytics.daily_rollups
           SELECT date_trunc('day', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', org_id, model_id,
                  sum(request_count), sum(tokens_total), sum(error_count), sum(cost_total), currency
           FROM analytics.hourly_rollups WHERE org_id = $1 GROUP BY 1, 2, 3, currency""",
        org,
    )


HOURLY_MONTH = {
    "timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"},
    "granularity": "hourly",
}


async def post_export(
    http: aiohttp.ClientSession, cluster: Cluster, org: uuid.UUID, body: dict[str, object] = HOURLY_MONTH
) -> uuid.UUID:
    async with http.post(
        f"{cluster.base}/analytics/v1/orgs/{org}/exports", json=body, headers=cluster.auth(org)
    ) as r:
        assert r.status == 202, await r.text()
        return uuid.UUID((await r.json())["jobId"])


async def job_row(db: asyncpg.Connection, job_id: uuid.UUID) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM analytics.export_jobs WHERE job_id = $1", job_id)
    assert row is not None
    return row


async def wait_until(
    db: asyncpg.Connection, job_id: uuid.UUID, predicate: str, cluster: Cluster, seconds: float = 60
) -> asyncpg.Record:
    """Poll the job row until the SQL ``predicate`` holds for it."""
    deadline = time.monotonic() + seconds
    while True:
        row = await db.fetchrow(
            f"SELECT * FROM analytics.export_jobs WHERE job_id = $1 AND ({predicate})",
            job_id,
        )
        if row is not None:
            return row
        if time.monotonic() > deadline:
            current = dict(await job_row(db, job_id))
            raise AssertionError(f"job never reached {predicate!r}: {current}\n{cluster.log_tail()}")
        await asyncio.sleep(0.1)


async def wait_finished(
    db: asyncpg.Connection, job_id: uuid.UUID, cluster: Cluster, seconds: float = 90
) -> asyncpg.Record:
    return await wait_until(
        db, job_id, "status IN ('succeeded', 'failed', 'expired', 'cancelled')", cluster, seconds
    )


async def incomplete_uploads(bucket: S3Client) -> list[str]:
    listing = await bucket.list_multipart_uploads(Bucket=BUCKET, Prefix="analytics/exports/")
    return [str(u["Key"]) for u in listing.get("Uploads", []) or []]  # type: ignore[attr-defined]


async def objects_of(bucket: S3Client, org: uuid.UUID) -> list[str]:
    listing = await bucket.list_objects_v2(Bucket=BUCKET, Prefix=f"analytics/exports/{org}/")  # type: ignore[attr-defined]
    return [str(o["Key"]) for o in listing.get("Contents", []) or []]


async def read_key(bucket: S3Client, key: str) -> bytes:
    response = await bucket.get_object(Bucket=BUCKET, Key=key)  # type: ignore[attr-defined]
    async with response["Body"] as body:
        return bytes(await body.read())


async def read_object(bucket: S3Client, org: uuid.UUID, job_id: uuid.UUID) -> bytes:
    return await read_key(bucket, object_key(org, job_id))


async def eventually_no_uploads(bucket: S3Client, seconds: float = 30) -> None:
    """The sweep may need a tick after a fault heals to abort what it could not abort during it."""
    deadline = time.monotonic() + seconds
    while True:
        left = await incomplete_uploads(bucket)
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert left == [], f"incomplete multipart uploads left behind: {left}"


def worker_pid(row: asyncpg.Record) -> int:
    return int(str(row["claimed_by"]).rsplit(":", 1)[1])
