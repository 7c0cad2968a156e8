"""Restatements through the real processes: a scheduled export is delivered, one rollup row of its
period changes, and a restated export of the same period follows, with its totals those of the
new data, announced by an `export.restated` webhook carrying the old and new totals."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from service import webhook_signing
from service.schedule import Cadence, Period, Recurrence
from tests.e2e.conftest import Stack, wait_for_job
from tests.support.rollups import daily_from_hourly, hourly_rollups, insert
from tests.support.webhook_receiver import Receiver, running_receiver

pytestmark = pytest.mark.usefixtures("clean_state")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as found:
        yield found


async def events(receiver: Receiver, kind: str, count: int, seconds: float = 60) -> list[dict[str, Any]]:
    """The first ``count`` accepted deliveries of ``kind``, waiting for them."""
    deadline = time.monotonic() + seconds
    while True:
        found = [orjson.loads(body) for _, body, _ in receiver.accepted()]
        found = [event for event in found if event["type"] == kind]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} {kind} of {count} after {seconds} s"
        await asyncio.sleep(0.2)


async def get_json(http: aiohttp.ClientSession, stack: Stack, org: uuid.UUID, url: str) -> Any:
    async with http.get(url, headers=stack.auth(org)) as reply:
        assert reply.status == 200, await reply.text()
        return orjson.loads(await reply.read())


async def test_a_changed_rollup_row_restates_a_delivered_period(
    http: aiohttp.ClientSession, stack: Stack, receiver: Receiver
) -> None:
    # Given yesterday's usage, a webhook, and a daily schedule of the previous day due now
    org = uuid.uuid4()
    yesterday = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    hourly = hourly_rollups(org, yesterday, 24, ("gpt-4o", "claude"))
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await insert(conn, "hourly_rollups", hourly)
        await insert(conn, "daily_rollups", daily_from_hourly(hourly))
    finally:
        await conn.close()
    base = f"{stack.base}/analytics/v1/orgs/{org}"
    async with http.post(
        f"{base}/webhooks",
        json={"url": receiver.url, "events": ["export.succeeded", "export.restated"]},
        headers=stack.auth(org),
    ) as reply:
        assert reply.status == 201, await reply.text()
        secret = (await reply.json())["secret"]
    body = {"cadence": "daily", "period": "previous_day", "granularity": "daily", "runAtHour": 0}
    async with http.post(f"{base}/export-schedules", json=body, headers=stack.auth(org)) as reply:
        assert reply.status == 201, await reply.text()
        schedule_id = (await reply.json())["scheduleId"]
    today = Recurrence(Cadence.DAILY, Period.PREVIOUS_DAY, "UTC", 0).next_run(yesterday + timedelta(hours=1))
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute(
            "UPDATE analytics.export_schedules SET next_run_at = $2 WHERE schedule_id = $1",
            uuid.UUID(schedule_id),
            today,
        )
    finally:
        await conn.close()
    # When the scheduler makes and the worker delivers its export
    # (the one of that period: past midnight, the scheduler would make today's run too)
    period = {"start": f"{yesterday:%Y-%m-%dT%H:%M:%SZ}", "end": f"{today:%Y-%m-%dT%H:%M:%SZ}"}
    succeeded = await events(receiver, "export.succeeded", 1)
    [delivered] = [event for event in succeeded if event["data"]["job"]["timeRange"] == period]
    original = delivered["data"]["job"]
    assert original["scheduleId"] == schedule_id
    # and late usage then changes one hour of that day (its hourly and daily rollups)
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        for table, bucket in (
            ("hourly_rollups", yesterday + timedelta(hours=13)),
            ("daily_rollups", yesterday),
        ):
            await conn.execute(
                f"UPDATE analytics.{table} SET cost_total = cost_total + 1.5,"
                " tokens_total = tokens_total + 10"
                " WHERE org_id = $1 AND bucket_start = $2 AND model_id = 'gpt-4o'",
                org,
                bucket,
            )
    finally:
        await conn.close()

    # Then an export of the same period restates it, and export.restated says by how much
    [restated] = await events(receiver, "export.restated", 1)
    job = restated["data"]["job"]
    assert job["restatementOf"] == original["jobId"] == restated["data"]["restatementOf"]
    assert (job["scheduleId"], job["timeRange"], job["status"]) == (
        schedule_id,
        original["timeRange"],
        "succeeded",
    )
    assert restated["data"]["previousTotals"] == delivered["data"]["totals"]
    manifest = await get_json(http, stack, org, f"{stack.exports_url(org)}/{job['jobId']}/manifest")
    assert restated["data"]["totals"] == manifest["totals"]
    assert restated["data"]["differences"] == {
        "USD": {"costTotal": "1.500000", "requestCount": 0, "tokensTotal": 10, "errorCount": 0}
    }
    # The new totals are the new data's, summed here from the rows with Decimal
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        cost = await conn.fetchval(
            "SELECT sum(cost_total)::text FROM analytics.daily_rollups"
            " WHERE org_id = $1 AND bucket_start = $2",
            org,
            yesterday,
        )
    finally:
        await conn.close()
    assert Decimal(manifest["totals"]["USD"]["costTotal"]) == Decimal(cost)
    assert Decimal(cost) - Decimal(delivered["data"]["totals"]["USD"]["costTotal"]) == Decimal("1.5")
    for headers, payload, _ in receiver.accepted():
        webhook_signing.verify(secret, headers, payload, now=time.time())
    # The delivered export stays, and the schedule's list shows both; no further restatement
    await asyncio.sleep(3)  # several restatement ticks: the restatement agrees with the rollups
    listed = await get_json(http, stack, org, f"{stack.exports_url(org)}?scheduleId={schedule_id}")
    by_id = {item["jobId"]: item for item in listed["items"]}
    assert set(by_id) == {original["jobId"], job["jobId"]}
    assert by_id[original["jobId"]]["status"] == "succeeded"
    assert by_id[original["jobId"]]["restatementOf"] is None
    finished = await wait_for_job(http, stack, org, job["jobId"])
    assert finished == job
    assert len(await events(receiver, "export.restated", 1)) == 1
