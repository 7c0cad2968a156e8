"""T026, end to end: seeded known totals, exported through API -> RabbitMQ -> worker -> S3, downloaded
through the presigned URL, and reconciled exactly (every row, and the totals) for every granularity,
with and without a model filter."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import aiohttp
import asyncpg
import pytest

from service.job import object_key
from tests.conftest import BUCKET, OVERRIDE_BUCKET, OVERRIDE_ORG
from tests.e2e.conftest import Stack, create_export, download, wait_for_job
from tests.support.rollups import (
    HEADER,
    TRICKY_MODELS,
    Rollup,
    daily_from_hourly,
    expected_rows,
    hourly_rollups,
    insert,
)

pytestmark = pytest.mark.usefixtures("clean_state")
# 31 days crossing a month boundary, so monthly has two buckets; data runs past both ends.
START = datetime(2026, 9, 15, tzinfo=UTC)
END = START + timedelta(days=31)
SEED_FROM = START - timedelta(days=1)
SEED_HOURS = 24 * 33
FILTER = ["claude-3,5", "modèle-日本", "multi\nline", "not-a-model"]


async def seed(stack: Stack, org: uuid.UUID) -> tuple[list[Rollup], list[Rollup]]:
    hourly = hourly_rollups(org, SEED_FROM, SEED_HOURS, TRICKY_MODELS)
    other_org = hourly_rollups(uuid.uuid4(), SEED_FROM, 48, TRICKY_MODELS, seed=3)
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await insert(conn, "hourly_rollups", hourly + other_org)
        await insert(conn, "daily_rollups", daily_from_hourly(hourly + other_org))
    finally:
        await conn.close()
    return hourly, daily_from_hourly(hourly)


async def rollup_totals(stack: Stack, org: uuid.UUID, granularity: str, models: list[str] | None) -> tuple:
    """The totals as PostgreSQL sums them straight from the rollup table."""
    table = "hourly_rollups" if granularity == "hourly" else "daily_rollups"
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        return tuple(
            await conn.fetchrow(
                f"""SELECT coalesce(sum(request_count), 0), coalesce(sum(tokens_total), 0),
                           coalesce(sum(error_count), 0), coalesce(sum(cost_total), 0)
                    FROM analytics.{table} WHERE org_id = $1 AND bucket_start >= $2 AND bucket_start < $3
                    AND ($4::text[] IS NULL OR model_id = ANY($4))""",
                org,
                START,
                END,
                models,
            )
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("models", [None, FILTER], ids=["all-models", "model-filter"])
@pytest.mark.parametrize("granularity", ["hourly", "daily", "monthly"])
async def test_export_reconciles_exactly(
    stack: Stack, http: aiohttp.ClientSession, granularity: str, models: list[str] | None
) -> None:
    # Given known rollups for an org (and another org's that must not appear)
    org = uuid.uuid4()
    hourly, _ = await seed(stack, org)
    # When finance asks for the export, with the range given in a non-UTC offset
    body: dict[str, object] = {
        "timeRange": {"start": "2026-09-15T02:00:00+02:00", "end": END.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "granularity": granularity,
    }
    if models is not None:
        body["models"] = models
    created = await create_export(http, stack, org, body)
    job = await wait_for_job(http, stack, org, str(created["jobId"]))

    # Then the job succeeded and the downloaded bytes are what the API vouches for
    assert job["status"] == "succeeded", job
    data = await download(http, stack, org, str(job["jobId"]))
    assert hashlib.sha256(data).hexdigest() == job["checksum"]
    assert job["outputUri"] == f"s3://{BUCKET}/{object_key(org, uuid.UUID(str(job['jobId'])))}"
    assert job["models"] == models
    # And every row is exactly the rollup data, in order
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows[0] == HEADER
    expected = expected_rows(hourly, org_id=org, granularity=granularity, start=START, end=END, models=models)
    assert rows[1:] == expected
    assert job["rowCount"] == len(expected) > 0
    # And the CSV totals equal the rollup totals to the cent (and beyond: to the micro-unit)
    csv_totals = (
        sum(int(r[3]) for r in rows[1:]),
        sum(int(r[4]) for r in rows[1:]),
        sum(int(r[5]) for r in rows[1:]),
        sum(Decimal(r[6]) for r in rows[1:]),
    )
    assert csv_totals == await rollup_totals(stack, org, granularity, models)


async def test_monthly_buckets_are_first_of_month(stack: Stack, http: aiohttp.ClientSession) -> None:
    org = uuid.uuid4()
    await seed(stack, org)
    body = {
        "timeRange": {"start": "2026-09-15T00:00:00Z", "end": "2026-10-16T00:00:00Z"},
        "granularity": "monthly",
    }
    job = await wait_for_job(http, stack, org, str((await create_export(http, stack, org, body))["jobId"]))
    data = await download(http, stack, org, str(job["jobId"]))
    buckets = {row[0] for row in list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]}
    assert buckets == {"2026-09-01T00:00:00Z", "2026-10-01T00:00:00Z"}


async def test_org_override_bucket_end_to_end(stack: Stack, http: aiohttp.ClientSession) -> None:
    body = {
        "timeRange": {"start": "2026-09-15T00:00:00Z", "end": "2026-09-16T00:00:00Z"},
        "granularity": "daily",
    }
    created = await create_export(http, stack, OVERRIDE_ORG, body)
    job = await wait_for_job(http, stack, OVERRIDE_ORG, str(created["jobId"]))
    assert job["status"] == "succeeded"
    assert str(job["outputUri"]).startswith(f"s3://{OVERRIDE_BUCKET}/analytics/exports/{OVERRIDE_ORG}/")
    data = await download(http, stack, OVERRIDE_ORG, str(job["jobId"]))
    assert data == (",".join(HEADER) + "\n").encode()
    assert job["rowCount"] == 0
