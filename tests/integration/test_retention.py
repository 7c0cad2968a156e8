"""Rollup retention against a real PostgreSQL: exactly the rows before the cutoff are deleted, in
bounded batches, from every rollup table, through the index migration 0008 adds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from service.housekeeping import Housekeeper
from service.job import ExportRequest, Granularity, IdempotencyKey
from service.repository import JobRepository, create_pool
from service.retention import PRUNE_GRACE, RollupTable, retention_cutoff
from service.rollups import DEFAULT_TABLES
from service.settings import Settings
from service.sql import rollup_queries
from service.storage import ObjectStore, open_s3_client
from tests.support.rollups import Rollup, hourly_rollups, insert

pytestmark = pytest.mark.usefixtures("clean_state")
#: A clock on the hour, so the cutoff (13 months back) is itself the start of an hourly bucket.
NOW = datetime(2026, 3, 31, 10, tzinfo=UTC)
CUTOFF = datetime(2025, 2, 28, 10, tzinfo=UTC)  # March 31 minus 13 months, clamped to February 28
ORGS = [uuid.UUID(int=i) for i in (1, 2, 3)]
MODELS = ("gpt-4o", "claude-sonnet", "Zeta")


@pytest.fixture
async def housekeeper(settings: Settings) -> AsyncIterator[Housekeeper]:
    retention = replace(settings, data_retention_months=13, rollup_prune=True)
    pool = await create_pool(settings.database_url, max_size=2)
    async with open_s3_client(settings) as client:
        yield Housekeeper(
            JobRepository(pool, tables=DEFAULT_TABLES),
            ObjectStore.from_settings(client, retention),
            retention,
        )
    await pool.close()


def rollup(bucket_start: datetime, org_id: uuid.UUID, model_id: str) -> Rollup:
    return Rollup(bucket_start, org_id, model_id, 10, 1000, 1, Decimal("1.250000"))


def seed_rows() -> dict[RollupTable, list[Rollup]]:
    """Rows on both sides of CUTOFF: hourly buckets from 30 hours before it to 10 hours after, daily
    buckets from 10 days before to 5 days after, and in both tables a row exactly at the cutoff and
    one a microsecond before it."""
    hourly = [
        r for org in ORGS for r in hourly_rollups(org, CUTOFF - timedelta(hours=30), 40, MODELS, seed=org.int)
    ]
    midnight = CUTOFF.replace(hour=0)
    daily = [
        rollup(midnight + timedelta(days=d), org, m) for d in range(-10, 6) for org in ORGS for m in MODELS
    ]
    edges = [rollup(t, org, "edge") for t in (CUTOFF, CUTOFF - timedelta(microseconds=1)) for org in ORGS]
    return {RollupTable.HOURLY: hourly + edges, RollupTable.DAILY: daily + edges}


async def stored(conn: asyncpg.Connection, table: RollupTable) -> set[tuple[object, ...]]:
    rows = await conn.fetch(
        "SELECT bucket_start, org_id, model_id, request_count, tokens_total, error_count, cost_total,"
        f" currency FROM analytics.{table.value}"
    )
    return {tuple(row.values()) for row in rows}


@pytest.fixture
async def seeded(
    settings: Settings,
) -> AsyncIterator[tuple[asyncpg.Connection, dict[RollupTable, list[Rollup]]]]:
    rows = seed_rows()
    conn = await asyncpg.connect(settings.database_url)
    try:
        for table, records in rows.items():
            await insert(conn, table.value, records)
        yield conn, rows
    finally:
        await conn.close()


def test_the_clock_puts_the_cutoff_on_an_hourly_bucket() -> None:
    assert retention_cutoff(NOW, 13) == CUTOFF


async def test_prune_deletes_exactly_the_rows_before_the_cutoff_in_several_batches(
    housekeeper: Housekeeper, seeded: tuple[asyncpg.Connection, dict[RollupTable, list[Rollup]]]
) -> None:
    conn, rows = seeded
    old = {table: [r for r in records if r.bucket_start < CUTOFF] for table, records in rows.items()}
    kept = {
        table: {r.record() for r in records if r.bucket_start >= CUTOFF} for table, records in rows.items()
    }
    assert all(len(old[table]) > 5 * 17 for table in RollupTable)  # several batches of 17 each
    # When one tick prunes 17 rows per statement
    deleted = await housekeeper.prune_rollups(NOW + PRUNE_GRACE, batch=17, pause=0)
    # Then exactly the old rows are gone, and every newer row (the one at the cutoff too) is untouched
    assert deleted == sum(len(records) for records in old.values())
    for table in RollupTable:
        assert await stored(conn, table) == kept[table], table
    # And a second tick finds nothing
    assert await housekeeper.prune_rollups(NOW + PRUNE_GRACE, batch=17, pause=0) == 0


async def test_a_capped_tick_deletes_the_oldest_rows_first(
    housekeeper: Housekeeper, seeded: tuple[asyncpg.Connection, dict[RollupTable, list[Rollup]]]
) -> None:
    conn, rows = seeded
    # Given 9 rows in each bucket (3 orgs x 3 models), in both tables
    per_bucket = len(ORGS) * len(MODELS)
    # When a tick may run only 2 statements of 9 rows per table
    assert (
        await housekeeper.prune_rollups(NOW + PRUNE_GRACE, batch=per_bucket, max_batches=2, pause=0)
        == 4 * per_bucket
    )
    # Then in each table the two oldest buckets are gone, and nothing else
    for table in RollupTable:
        oldest_two = sorted({r.bucket_start for r in rows[table]})[:2]
        assert sum(r.bucket_start in oldest_two for r in rows[table]) == 2 * per_bucket
        assert await stored(conn, table) == {
            r.record() for r in rows[table] if r.bucket_start not in oldest_two
        }, table


async def test_every_rollup_table_in_the_schema_is_pruned(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'analytics' AND tablename LIKE '%rollups'"
        )
    finally:
        await conn.close()
    assert {row["tablename"] for row in tables} == {table.value for table in RollupTable}


PRUNE = rollup_queries(DEFAULT_TABLES.placeholders())


@pytest.mark.parametrize("table", list(RollupTable))
async def test_a_prune_statement_is_an_index_range_scan(settings: Settings, table: RollupTable) -> None:
    # With sequential scans ruled out, the plan names the retention index only if the query's
    # predicate is one that index can serve (on a table this small the planner would otherwise
    # rightly prefer a scan, so the plan alone could not tell)
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            await conn.execute("SET LOCAL enable_bitmapscan = off")
            plan = "\n".join(
                row[0] for row in await conn.fetch("EXPLAIN " + PRUNE[f"prune_{table.value}"], CUTOFF, 10)
            )
    finally:
        await conn.close()
    assert f"Index Scan using {table.value}_retention_idx" in plan, plan
    assert "Index Cond" in plan, plan
    assert "Tid Scan" in plan, plan


async def test_the_prune_tick_forgets_idempotency_keys_past_their_24_hours(
    housekeeper: Housekeeper, settings: Settings
) -> None:
    # Given two jobs created with Idempotency-Keys, one of them used 25 hours ago
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        repository = JobRepository(pool, tables=DEFAULT_TABLES)
        org = uuid.uuid4()
        request = ExportRequest(
            org,
            "ana",
            datetime(2026, 10, 1, tzinfo=UTC),
            datetime(2026, 10, 2, tzinfo=UTC),
            Granularity.DAILY,
            None,
        )
        for key in ("old-key", "fresh-key"):
            await repository.create(request, idempotency=IdempotencyKey(key, "hash-" + key))
    finally:
        await pool.close()
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "UPDATE analytics.export_idempotency SET created_at = now() - interval '25 hours' "
            "WHERE key = 'old-key'"
        )
        # When a prune tick runs (one key per statement, so the batching is exercised)
        await housekeeper.prune_rollups(batch=1, pause=0)
        # Then only the expired key is gone; the live one still guards its request
        keys = await conn.fetch("SELECT key FROM analytics.export_idempotency WHERE org_id = $1", org)
    finally:
        await conn.close()
    assert [row["key"] for row in keys] == ["fresh-key"]
