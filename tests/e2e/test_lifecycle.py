"""Lifecycle through the real processes: expiry by the scheduler, and the 148,800-row export."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from decimal import Decimal

import aiohttp
import asyncpg
import pytest
from botocore.exceptions import ClientError

from service.storage import open_s3_client, parse_s3_uri
from tests.e2e.conftest import Stack, create_export, download, wait_for_job

pytestmark = pytest.mark.usefixtures("clean_state")


async def test_scheduler_expires_succeeded_jobs_and_deletes_their_objects(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    # Given a succeeded export
    org = uuid.uuid4()
    body = {
        "timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-02T00:00:00Z"},
        "granularity": "hourly",
    }
    job = await wait_for_job(http, stack, org, str((await create_export(http, stack, org, body))["jobId"]))
    assert job["status"] == "succeeded"
    # When its download window closes (moved into the past rather than waiting 24 h)
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute(
            "UPDATE analytics.export_jobs SET expires_at = now() - interval '1 second' WHERE job_id = $1",
            uuid.UUID(str(job["jobId"])),
        )
    finally:
        await conn.close()
    url = f"{stack.exports_url(org)}/{job['jobId']}/download"
    async with http.get(url, headers=stack.auth(org), allow_redirects=False) as reply:
        assert reply.status == 410  # past expiry is gone at once, before the sweep runs
    # Then the scheduler's periodic actor marks it expired and deletes the object
    deadline = time.monotonic() + 30
    while (await wait_for_job(http, stack, org, str(job["jobId"])))["status"] != "expired":
        assert time.monotonic() < deadline, "the job was not expired within 30 s"
        await asyncio.sleep(0.2)
    async with http.get(url, headers=stack.auth(org), allow_redirects=False) as reply:
        assert reply.status == 410
        assert reply.content_type == "application/problem+json"
    bucket, key = parse_s3_uri(str(job["outputUri"]))
    async with open_s3_client(stack.settings) as client:
        with pytest.raises(ClientError) as missing:
            await client.head_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
    assert missing.value.response["Error"]["Code"] in ("404", "NoSuchKey")


async def test_31_day_hourly_export_of_200_models(stack: Stack, http: aiohttp.ClientSession) -> None:
    # Given 200 models x 744 hours of hourly rollups (148,800 rows)
    org = uuid.uuid4()
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute(
            """INSERT INTO analytics.hourly_rollups
               SELECT '2026-10-01T00:00:00Z'::timestamptz + h * interval '1 hour', $1,
                      'model-' || lpad(m::text, 3, '0'),
                      h + m, (h + m) * 100, m % 3, ((h * 7 + m) % 100000) / 1000.0, 'USD'
               FROM generate_series(0, 743) h, generate_series(1, 200) m""",
            org,
        )
        expected_cost = await conn.fetchval(
            "SELECT sum(cost_total)::text FROM analytics.hourly_rollups WHERE org_id = $1", org
        )
    finally:
        await conn.close()
    # When the whole month is exported hourly
    body = {
        "timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"},
        "granularity": "hourly",
    }
    job = await wait_for_job(
        http, stack, org, str((await create_export(http, stack, org, body))["jobId"]), wait_seconds=180
    )
    # Then it succeeds, spans several multipart parts, and the bytes match the checksum and the totals
    assert job["status"] == "succeeded", job
    assert job["rowCount"] == 148_800
    data = await download(http, stack, org, str(job["jobId"]))
    assert len(data) == job["byteCount"]
    assert len(data) > 2 * stack.settings.export_part_size
    assert hashlib.sha256(data).hexdigest() == job["checksum"]
    lines = data.split(b"\n")
    assert len(lines) == 148_800 + 2  # header, rows, and the empty string after the final newline
    cells = [line.rsplit(b",", 2) for line in lines[1:-1]]  # cost_total, currency: the last two
    assert {currency for _, _, currency in cells} == {b"USD"}
    assert sum(Decimal(cost.decode()) for _, cost, _ in cells) == Decimal(expected_cost)
