"""Migrations against a real PostgreSQL: the schema the spec asks for, idempotent, reversible, concurrent."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from service.migrations import load_migrations, migrate_down, migrate_up
from service.repository import ensure_database
from tests.conftest import ADMIN_DATABASE_URL, BIN

ROLLUP_COLUMNS = [
    ("bucket_start", "timestamp with time zone"),
    ("org_id", "uuid"),
    ("model_id", "text"),
    ("request_count", "bigint"),
    ("tokens_total", "bigint"),
    ("error_count", "bigint"),
    ("cost_total", "numeric(20,6)"),
]


@pytest.fixture
async def scratch_url() -> AsyncIterator[str]:
    name = f"analytics_mig_{uuid.uuid4().hex[:10]}"
    url = urlunsplit(urlsplit(ADMIN_DATABASE_URL)._replace(path="/" + name))
    await ensure_database(url)
    yield url
    admin = await asyncpg.connect(ADMIN_DATABASE_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def columns(conn: asyncpg.Connection, table: str) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
           WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        table,
    )
    return [(r[0], r[1]) for r in rows]


async def test_schema_matches_the_spec(scratch_url: str) -> None:
    await migrate_up(scratch_url)
    conn = await asyncpg.connect(scratch_url)
    try:
        for table in ("analytics.hourly_rollups", "analytics.daily_rollups"):
            assert await columns(conn, table) == ROLLUP_COLUMNS
            pk = await conn.fetchval(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = $1::regclass AND contype = 'p'",
                table,
            )
            assert pk == "PRIMARY KEY (org_id, bucket_start, model_id)"
        job_columns = dict(await columns(conn, "analytics.export_jobs"))
        for name in (
            "job_id",
            "org_id",
            "requested_by",
            "time_range_start",
            "time_range_end",
            "granularity",
            "status",
            "output_uri",
            "checksum",
            "row_count",
            "initiated_at",
            "completed_at",
            "error_message",
        ):
            assert name in job_columns
        statuses = await conn.fetchval("SELECT enum_range(NULL::analytics.export_status)::text[]")
        assert statuses == ["pending", "running", "succeeded", "failed", "expired", "cancelled"]
        granularities = await conn.fetchval("SELECT enum_range(NULL::analytics.export_granularity)::text[]")
        assert granularities == ["hourly", "daily", "monthly"]
        indexes = {
            r["indexname"]: r["indexdef"]
            for r in await conn.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'export_jobs'"
            )
        }
        assert any("(org_id, initiated_at DESC)" in d for d in indexes.values())
        assert any(
            "(status)" in d and "WHERE" in d and "pending" in d and "running" in d for d in indexes.values()
        )
    finally:
        await conn.close()


async def test_up_is_idempotent_and_up_down_up_works(scratch_url: str) -> None:
    names = [f"{m.version:04d}_{m.name}" for m in load_migrations()]
    assert await migrate_up(scratch_url) == names
    assert await migrate_up(scratch_url) == []
    assert await migrate_down(scratch_url, steps=len(names)) == names[::-1]
    conn = await asyncpg.connect(scratch_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('analytics.export_jobs')") is None
    finally:
        await conn.close()
    assert await migrate_up(scratch_url) == names


async def test_two_processes_migrating_at_once_apply_each_migration_once(scratch_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": scratch_url}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "analytics-exports"), "migrate", "up"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first, second = await asyncio.gather(asyncio.to_thread(run), asyncio.to_thread(run))
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    conn = await asyncpg.connect(scratch_url)
    try:
        versions = await conn.fetchval("SELECT array_agg(version) FROM public.analytics_exports_migrations")
    finally:
        await conn.close()
    assert sorted(versions) == [m.version for m in load_migrations()]


def test_a_bad_setting_stops_the_cli_naming_the_variable() -> None:
    result = subprocess.run(
        [str(BIN / "analytics-exports"), "migrate", "up"],
        env={**os.environ, "EXPORT_WORKER_INTERVAL": "soon"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "EXPORT_WORKER_INTERVAL" in result.stderr


async def test_the_csv_guard_is_inlined_into_the_export_query(database_url: str) -> None:
    # A function call per row cost about 1 µs (1.5 s of a 1.5M-row export): PostgreSQL must be
    # able to inline analytics.csv_safe, which it cannot once the function is declared STRICT.
    conn = await asyncpg.connect(database_url)
    try:
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN VERBOSE SELECT analytics.csv_safe(model_id) FROM analytics.hourly_rollups"
            )
        )
    finally:
        await conn.close()
    assert "csv_safe" not in plan, plan
    assert "regexp_replace" in plan
