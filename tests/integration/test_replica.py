"""Exports read from a real streaming replica (DATABASE_READ_URL), and never from one that has not
replayed past their job's creation. The primary and its replica are PostgreSQL clusters of this
test's own (initdb, then pg_basebackup), on spare ports, run as the postgres user."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from devtools.local import free_port
from service.exporter import Exporter
from service.job import ExportRequest, Granularity, JobStatus
from service.migrations import migrate_up
from service.repository import JobRepository, create_pool
from service.rollups import DEFAULT_TABLES
from service.settings import Settings
from service.storage import ObjectStore, open_s3_client
from tests.conftest import BUCKET
from tests.support.rollups import daily_from_hourly, expected_rows, hourly_rollups, insert

PG_BIN = next(Path("/usr/lib/postgresql").glob("*/bin"), Path("/usr/lib/postgresql/15/bin"))
START, END = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 3, tzinfo=UTC)


@dataclass(frozen=True)
class Pair:
    primary: str
    replica: str
    #: The replica's log: it logs every statement it runs.
    replica_log: Path


def as_postgres(*command: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """A primary (replication allowed from loopback) and a streaming replica of it."""
    home = Path(tempfile.mkdtemp(prefix="pgpair-"))
    shutil.chown(home, "postgres")
    primary, replica = home / "primary", home / "replica"
    ports = free_port(), free_port()
    options = [f"-p {port} -k {home} -c listen_addresses=127.0.0.1" for port in ports]
    options[1] += " -c log_statement=all"
    as_postgres(str(PG_BIN / "initdb"), "-D", str(primary), "-A", "trust", "-U", "postgres")
    with (primary / "pg_hba.conf").open("a") as hba:
        hba.write("host replication all 127.0.0.1/32 trust\n")
    started = []
    try:
        as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(primary), "-o", options[0], "-l", f"{home}/p.log", "-w", "start"
        )
        started.append(primary)
        as_postgres(
            str(PG_BIN / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(ports[0]),
            "-U",
            "postgres",
            "-D",
            str(replica),
            "-R",
            "-X",
            "stream",
        )
        as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(replica), "-o", options[1], "-l", f"{home}/r.log", "-w", "start"
        )
        started.append(replica)
        yield Pair(
            f"postgresql://postgres@127.0.0.1:{ports[0]}/postgres",
            f"postgresql://postgres@127.0.0.1:{ports[1]}/postgres",
            home / "r.log",
        )
    finally:
        for data in reversed(started):
            as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Parts:
    exporter: Exporter
    repository: JobRepository
    behind: list[int]
    settings: Settings


@pytest.fixture
async def parts(pair: Pair, settings: Settings, clean_state: None) -> AsyncIterator[Parts]:
    await migrate_up(pair.primary, rollup_tables=DEFAULT_TABLES)
    primary = await create_pool(pair.primary, max_size=4)
    replica = await create_pool(pair.replica, max_size=2)
    behind: list[int] = []
    repository = JobRepository(
        primary, replica, tables=DEFAULT_TABLES, replica_wait=1.0, on_replica_behind=lambda: behind.append(1)
    )
    test_settings = replace(settings, database_url=pair.primary, database_read_url=pair.replica)
    async with open_s3_client(test_settings) as client:
        store = ObjectStore.from_settings(client, test_settings)
        yield Parts(Exporter(repository, store, test_settings), repository, behind, test_settings)
    await primary.close()
    await replica.close()


def reads_logged(log: Path, org: uuid.UUID) -> int:
    """Lines of a PostgreSQL statement log naming ``org``: only the export query does (the COPY
    of its rows, the org id a literal in it)."""
    return sum(str(org) in line for line in log.read_text(errors="replace").splitlines())


async def export(parts: Parts, org: uuid.UUID) -> list[list[str]]:
    job = (await parts.repository.create(ExportRequest(org, "me", START, END, Granularity.HOURLY, None))).job
    done = await parts.exporter.run(job.job_id)
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED, done.error_message
    async with open_s3_client(parts.settings) as client:
        response = await client.get_object(Bucket=BUCKET, Key=done.object_key)  # type: ignore[attr-defined]
        async with response["Body"] as body:
            data = await body.read()
    return list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]


async def test_exports_stream_from_the_replica_exactly(parts: Parts, pair: Pair) -> None:
    # Given rollups written on the primary
    org = uuid.uuid4()
    hourly = hourly_rollups(org, START, 48, ("gpt-4o", "claude-haiku"))
    conn = await asyncpg.connect(pair.primary)
    try:
        await insert(conn, "hourly_rollups", hourly)
        await insert(conn, "daily_rollups", daily_from_hourly(hourly))
    finally:
        await conn.close()
    # When an export runs with the replica as its read database
    rows = await export(parts, org)
    # Then the rows are exact, the replica ran the COPY, and it was never passed over
    assert rows == expected_rows(hourly, org_id=org, granularity="hourly", start=START, end=END, models=None)
    assert reads_logged(pair.replica_log, org) > 0
    assert parts.behind == []


async def test_a_replica_behind_the_job_is_passed_over_for_the_primary(parts: Parts, pair: Pair) -> None:
    # Given a replica whose replay is paused, so it has not seen what the primary wrote since
    replica = await asyncpg.connect(pair.replica)
    await replica.execute("SELECT pg_wal_replay_pause()")
    try:
        org = uuid.uuid4()
        hourly = hourly_rollups(org, START, 24, ("gpt-4o",))
        conn = await asyncpg.connect(pair.primary)
        try:
            await insert(conn, "hourly_rollups", hourly)
        finally:
            await conn.close()
        # When an export of those rows runs
        rows = await export(parts, org)
        # Then it waited for the replica, then read the primary: every row is there, and it counted
        assert rows == expected_rows(
            hourly, org_id=org, granularity="hourly", start=START, end=END, models=None
        )
        assert parts.behind == [1]
        assert reads_logged(pair.replica_log, org) == 0
    finally:
        await replica.execute("SELECT pg_wal_replay_resume()")
        await replica.close()
