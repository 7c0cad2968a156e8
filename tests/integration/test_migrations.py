"""Migrations against a real PostgreSQL: the schema the spec asks for, idempotent, reversible,
concurrent; the rollup tables only with ``--with-rollups``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from service.errors import MigrationMismatch
from service.migrations import load_migrations, migrate_down, migrate_up
from service.repository import ensure_database
from service.rollups import DEFAULT_TABLES, RollupTables
from service.sql import rollup_queries
from tests.conftest import ADMIN_DATABASE_URL, BIN

ROLLUP_COLUMNS = [
    ("bucket_start", "timestamp with time zone"),
    ("org_id", "uuid"),
    ("model_id", "text"),
    ("request_count", "bigint"),
    ("tokens_total", "bigint"),
    ("error_count", "bigint"),
    ("cost_total", "numeric(20,6)"),
    ("currency", "character(3)"),
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


async def test_the_migrations_make_no_rollup_table(scratch_url: str) -> None:
    await migrate_up(scratch_url)
    conn = await asyncpg.connect(scratch_url)
    try:
        made = await conn.fetchval(
            "SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'analytics' AND c.relkind = 'r'"
        )
        assert "export_jobs" in made
        assert not [name for name in made if "rollups" in name], made
        functions = await conn.fetchval(
            "SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'analytics'"
        )
        assert not [name for name in functions if "covered" in name], functions
    finally:
        await conn.close()


async def test_schema_matches_the_spec(scratch_url: str) -> None:
    await migrate_up(scratch_url, rollup_tables=DEFAULT_TABLES)
    conn = await asyncpg.connect(scratch_url)
    try:
        for table in ("analytics.hourly_rollups", "analytics.daily_rollups"):
            assert await columns(conn, table) == ROLLUP_COLUMNS
            pk = await conn.fetchval(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = $1::regclass AND contype = 'p'",
                table,
            )
            assert pk == "PRIMARY KEY (org_id, bucket_start, model_id, currency)"
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
    assert await migrate_up(scratch_url, rollup_tables=DEFAULT_TABLES) == names
    assert await migrate_up(scratch_url, rollup_tables=DEFAULT_TABLES) == []
    assert await migrate_down(scratch_url, steps=len(names)) == names[::-1]
    conn = await asyncpg.connect(scratch_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('analytics.export_jobs')") is None
        # the rollup tables are not the migrations' to drop (nor is their schema, then)
        assert await conn.fetchval("SELECT to_regclass('analytics.hourly_rollups')") is not None
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


@pytest.mark.parametrize(
    ("variable", "value"), [("EXPORT_WORKER_INTERVAL", "soon"), ("BILLING_CURRENCY", "usd")]
)
def test_a_bad_setting_stops_the_cli_naming_the_variable(variable: str, value: str) -> None:
    result = subprocess.run(
        [str(BIN / "analytics-exports"), "migrate", "up"],
        env={**os.environ, variable: value},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert variable in result.stderr


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


async def test_rollup_rows_that_name_no_currency_are_in_the_billing_currency(scratch_url: str) -> None:
    tables = RollupTables("billing.hourly", "billing.daily")
    await migrate_up(scratch_url, rollup_tables=tables, billing_currency="EUR")
    org = uuid.uuid4()
    conn = await asyncpg.connect(scratch_url)
    try:
        # A writer that names no currency writes in BILLING_CURRENCY
        for table in (tables.hourly, tables.daily):
            await conn.execute(
                f"INSERT INTO {table} (bucket_start, org_id, model_id, request_count, tokens_total,"
                " error_count, cost_total) VALUES ('2026-10-01T00:00:00Z', $1, 'gpt-4o', 1, 2, 0, 1.5)",
                org,
            )
            assert await conn.fetchval(f"SELECT currency FROM {table} WHERE org_id = $1", org) == "EUR"
        # ... while a row of another currency in the same hour and model is a row of its own
        await conn.execute(
            f"INSERT INTO {tables.hourly} VALUES ('2026-10-01T00:00:00Z', $1, 'gpt-4o', 1, 2, 0, 1.5, 'USD')",
            org,
        )
        refused = (asyncpg.exceptions.CheckViolationError, asyncpg.exceptions.StringDataRightTruncationError)
        for bad in ("usd", "US", "EURO", "U$D", ""):
            with pytest.raises(refused):
                await conn.execute(
                    f"INSERT INTO {tables.daily} VALUES ('2026-10-02T00:00:00Z', $1, 'm', 1, 2, 0, 1, $2)",
                    org,
                    bad,
                )
    finally:
        await conn.close()


async def test_with_rollups_leaves_tables_that_exist_as_they_are(scratch_url: str) -> None:
    # Given rollup tables of someone else's making, with a row
    conn = await asyncpg.connect(scratch_url)
    try:
        await conn.execute(
            "CREATE SCHEMA analytics;"
            " CREATE TABLE analytics.hourly_rollups (bucket_start timestamptz, org_id uuid, note text);"
            " INSERT INTO analytics.hourly_rollups VALUES ('2026-10-01T00:00:00Z', gen_random_uuid(), 'kept')"
        )
        # When migrated with --with-rollups, twice
        await migrate_up(scratch_url, rollup_tables=DEFAULT_TABLES)
        await migrate_up(scratch_url, rollup_tables=DEFAULT_TABLES)
        # Then that table is as it was, with no index added (the check names what it lacks), and
        # the missing one is made
        assert [name for name, _ in await columns(conn, "analytics.hourly_rollups")] == [
            "bucket_start",
            "org_id",
            "note",
        ]
        assert await conn.fetchval("SELECT note FROM analytics.hourly_rollups") == "kept"
        assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'hourly_rollups'") == 0
        assert await columns(conn, "analytics.daily_rollups") == ROLLUP_COLUMNS
    finally:
        await conn.close()


def test_a_billing_currency_that_is_not_a_code_makes_no_table() -> None:
    with pytest.raises(ValueError, match="three capital letters"):
        asyncio.run(
            migrate_up("postgresql://nowhere.invalid/x", rollup_tables=DEFAULT_TABLES, billing_currency="usd")
        )


async def test_the_primary_key_serves_the_hourly_export_order(database_url: str) -> None:
    # The export orders by bucket, model id (code points) and currency: the primary key's order,
    # so reading it through the key needs no sort.
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            await conn.execute("SET LOCAL enable_bitmapscan = off")
            plan = "\n".join(
                r[0]
                for r in await conn.fetch(
                    "EXPLAIN " + rollup_queries(DEFAULT_TABLES.placeholders())["export_hourly"],
                    uuid.uuid4(),
                    datetime(2026, 10, 1, tzinfo=UTC),
                    datetime(2026, 11, 1, tzinfo=UTC),
                    None,
                    "UTC",
                    True,
                )
            )
    finally:
        await conn.close()
    assert "hourly_rollups_pkey" in plan, plan
    assert "Sort" not in plan, plan


async def test_rolling_back_cancelled_webhooks_keeps_every_endpoint_subscribed_to_something(
    scratch_url: str,
) -> None:
    await migrate_up(scratch_url)
    conn = await asyncpg.connect(scratch_url)
    insert = (
        "INSERT INTO analytics.webhook_endpoints (webhook_id, org_id, created_by, url, events, secret)"
        " VALUES (gen_random_uuid(), gen_random_uuid(), 'me', 'https://example.com/h', $1, 'whsec_x')"
    )
    try:
        await conn.execute(insert, ["export.failed", "export.cancelled"])
        await conn.execute(insert, ["export.cancelled"])
        # An endpoint with nothing else to hear: refused, and nothing changed
        with pytest.raises(asyncpg.exceptions.RaiseError, match=r"only to export\.cancelled"):
            await migrate_down(scratch_url, steps=1)
        assert await conn.fetchval("SELECT count(*) FROM analytics.webhook_endpoints") == 2
        # Once it is gone, the other keeps what it still can hear
        await conn.execute("DELETE FROM analytics.webhook_endpoints WHERE events = '{export.cancelled}'")
        assert await migrate_down(scratch_url, steps=1) == ["0020_cancelled_webhooks"]
        assert await conn.fetchval("SELECT events FROM analytics.webhook_endpoints") == ["export.failed"]
    finally:
        await conn.close()


async def test_a_migration_recorded_under_another_name_stops_up_and_down(scratch_url: str) -> None:
    # Given a database that ran, as 0020, a migration this code does not have
    await migrate_up(scratch_url)
    conn = await asyncpg.connect(scratch_url)
    try:
        await conn.execute(
            "UPDATE public.analytics_exports_migrations SET name = 'something_else' WHERE version = 20"
        )
    finally:
        await conn.close()
    # Then neither direction runs anything, and the message names both
    for run in (migrate_up(scratch_url), migrate_down(scratch_url, steps=1)):
        with pytest.raises(
            MigrationMismatch, match=r"0020 ran here as 'something_else'.*'cancelled_webhooks'"
        ):
            await run
