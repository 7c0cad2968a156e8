"""The rollup tables are the platform's, end to end: a database where they already exist under the
spec's names (made here as the platform's own schema would have them, not as `migrate up
--with-rollups` makes this project's), migrated by `analytics-exports migrate up`, and the API,
worker and scheduler pointed at them by ROLLUP_HOURLY_TABLE and ROLLUP_DAILY_TABLE: the migration
leaves them alone and exports read them exactly."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import io
import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import aiohttp
import asyncpg
import pytest

from tests.conftest import BIN, fresh_database
from tests.e2e.conftest import Stack, create_export, download, run_stack, wait_for_job
from tests.support.rollups import (
    HEADER,
    TRICKY_MODELS,
    Rollup,
    daily_from_hourly,
    execute,
    expected_rows,
    hourly_rollups,
)

TABLES = {
    "ROLLUP_HOURLY_TABLE": "public.analytics_hourly_rollups",
    "ROLLUP_DAILY_TABLE": "public.analytics_daily_rollups",
}
#: The platform's tables: the spec's names in the public schema, their own column order, extra
#: columns, a unique constraint rather than a primary key, model ids in the database's collation,
#: the currency as text, the error count as integer and costs to four decimals.
PLATFORM_TABLE = """
CREATE TABLE public.{name} (
    org_id         uuid          NOT NULL,
    bucket_start   timestamptz   NOT NULL,
    model_id       text          NOT NULL,
    currency       text          NOT NULL DEFAULT 'USD',
    request_count  bigint        NOT NULL,
    error_count    integer       NOT NULL,
    tokens_total   bigint        NOT NULL,
    cost_total     numeric(18,4) NOT NULL,
    p95_latency_ms integer,
    updated_at     timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT {name}_key UNIQUE (org_id, bucket_start, model_id, currency)
)"""
COLUMNS = ["bucket_start", "org_id", "model_id", "request_count", "tokens_total", "error_count", "cost_total"]
SEED_FROM = datetime(2026, 9, 14, tzinfo=UTC)
# Partial days at both ends (the daily rows there are summed from hours), and a month boundary.
START = datetime(2026, 9, 15, 10, tzinfo=UTC)
END = datetime(2026, 10, 2, 15, tzinfo=UTC)
TIME_RANGE = {"start": f"{START:%Y-%m-%dT%H:%M:%SZ}", "end": f"{END:%Y-%m-%dT%H:%M:%SZ}"}
FILTER = ["claude-3,5", "modèle-日本", "alpha"]


async def relations(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT n.nspname || '.' || c.relname AS name FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname IN ('public', 'analytics') ORDER BY 1"
        )
    finally:
        await conn.close()
    return [row["name"] for row in rows]


@pytest.fixture(scope="module")
def platform_database() -> Iterator[str]:
    with fresh_database("analytics_platform", migrated=False) as database_url:
        asyncio.run(
            execute(
                database_url,
                PLATFORM_TABLE.format(name="analytics_hourly_rollups"),
                PLATFORM_TABLE.format(name="analytics_daily_rollups"),
            )
        )
        yield database_url


@pytest.fixture(scope="module")
def stack(
    platform_database: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    migrated = subprocess.run(
        [str(BIN / "analytics-exports"), "migrate", "up"],
        env={**os.environ, "DATABASE_URL": platform_database, **TABLES},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    yield from run_stack(platform_database, s3_endpoint, tmp_path_factory, **TABLES)


async def seed(database_url: str, org: uuid.UUID) -> list[Rollup]:
    """Hourly rollups of ``org`` (costs to four decimals, one model billed in EUR) and of
    another org, and the daily ones as their exact sums, written as the platform's rollup worker
    would."""
    hourly = [
        dataclasses.replace(
            r,
            cost_total=r.cost_total.quantize(Decimal("0.0001")),
            currency="EUR" if r.model_id == "alpha" else "USD",
        )
        for r in hourly_rollups(org, SEED_FROM, 24 * 20, TRICKY_MODELS)
    ]
    others = hourly_rollups(uuid.uuid4(), SEED_FROM, 48, TRICKY_MODELS, seed=3)
    conn = await asyncpg.connect(database_url)
    try:
        for table, rows in (
            ("analytics_hourly_rollups", hourly + others),
            ("analytics_daily_rollups", daily_from_hourly(hourly + others)),
        ):
            await conn.copy_records_to_table(
                table,
                schema_name="public",
                columns=[*COLUMNS, "currency"],
                records=[r.record() for r in rows],
            )
    finally:
        await conn.close()
    return hourly


def test_migrate_up_leaves_the_platform_tables_alone_and_makes_none(stack: Stack) -> None:
    tables = asyncio.run(relations(stack.settings.database_url))
    assert "public.analytics_hourly_rollups" in tables
    assert "public.analytics_daily_rollups" in tables
    assert "analytics.export_jobs" in tables
    assert [name for name in tables if name.startswith("analytics.") and "rollups" in name] == []


async def export(
    http: aiohttp.ClientSession, stack: Stack, org: uuid.UUID, **fields: object
) -> list[list[str]]:
    """The rows of the file an export of ``org`` over TIME_RANGE with ``fields`` makes, checked
    against the job's checksum."""
    created = await create_export(http, stack, org, {"timeRange": TIME_RANGE, **fields})
    job = await wait_for_job(http, stack, org, str(created["jobId"]))
    assert job["status"] == "succeeded", job
    data = await download(http, stack, org, str(job["jobId"]))
    assert hashlib.sha256(data).hexdigest() == job["checksum"]
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def costs(rows: list[list[str]], cost: int, currency: int) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for row in rows:
        totals[row[currency]] = totals.get(row[currency], Decimal(0)) + Decimal(row[cost])
    return totals


@pytest.mark.parametrize(
    ("granularity", "models"),
    [("hourly", None), ("daily", None), ("monthly", None), ("daily", FILTER)],
    ids=["hourly", "daily", "monthly", "daily-filtered"],
)
async def test_exports_read_the_platform_tables_exactly(
    stack: Stack, http: aiohttp.ClientSession, granularity: str, models: list[str] | None
) -> None:
    org = uuid.uuid4()
    hourly = await seed(stack.settings.database_url, org)
    rows = await export(http, stack, org, granularity=granularity, **({"models": models} if models else {}))
    assert rows[0] == HEADER
    expected = expected_rows(hourly, org_id=org, granularity=granularity, start=START, end=END, models=models)
    assert rows[1:] == expected
    assert {row[7] for row in rows[1:]} == {"USD", "EUR"}
    # six decimals in the file, whatever the platform's scale
    assert all(len(row[6].partition(".")[2]) == 6 for row in rows[1:])


async def test_focus_and_local_days_read_them_too(stack: Stack, http: aiohttp.ClientSession) -> None:
    org = uuid.uuid4()
    hourly = await seed(stack.settings.database_url, org)
    covered = [r for r in hourly if START <= r.bucket_start < END]
    truth = costs([[r.currency, str(r.cost_total)] for r in covered], 1, 0)
    # FOCUS, daily: a charge per day, model and currency, costing what the hours did
    focus = await export(http, stack, org, granularity="daily", schema="focus-1.0")
    header = focus[0]
    assert len(focus) - 1 == len(
        expected_rows(hourly, org_id=org, granularity="daily", start=START, end=END, models=None)
    )
    assert costs(focus[1:], header.index("BilledCost"), header.index("BillingCurrency")) == truth
    # Days of another zone, summed from the hourly table alone
    berlin = await export(http, stack, org, granularity="daily", timeZone="Europe/Berlin")
    assert berlin[1][0].endswith("+02:00")
    assert costs(berlin[1:], 6, 7) == truth


async def test_whole_days_come_from_the_daily_table(stack: Stack, http: aiohttp.ClientSession) -> None:
    # Given a whole day whose daily row the platform states differently from its hours' sum
    org = uuid.uuid4()
    await seed(stack.settings.database_url, org)
    await execute(
        stack.settings.database_url,
        f"UPDATE public.analytics_daily_rollups SET request_count = request_count + 1000000"
        f" WHERE org_id = '{org}' AND bucket_start = '2026-09-20T00:00:00Z' AND model_id = 'gpt-4o'",
    )
    # Then a daily export states the daily table's figure, an hourly one the hours'
    daily = await export(http, stack, org, granularity="daily", models=["gpt-4o"])
    hourly = await export(http, stack, org, granularity="hourly", models=["gpt-4o"])
    day = next(row for row in daily[1:] if row[0] == "2026-09-20T00:00:00Z")
    hours = [row for row in hourly[1:] if row[0].startswith("2026-09-20T")]
    assert len(hours) == 24
    assert int(day[3]) == sum(int(row[3]) for row in hours) + 1_000_000


def test_a_table_the_settings_name_but_the_platform_lacks_stops_the_worker(stack: Stack) -> None:
    env = {**stack.env, "ROLLUP_DAILY_TABLE": "public.analytics_daily_rollup"}
    started = subprocess.run(
        [str(BIN / "analytics-exports"), "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 1
    [line] = started.stderr.strip().splitlines()
    assert line.startswith("analytics-exports worker: the rollup tables cannot serve exports: ")
    assert "the rollup table public.analytics_daily_rollup does not exist" in line
