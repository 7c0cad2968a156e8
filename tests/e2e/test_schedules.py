"""Export schedules through the real processes: the API's CRUD and its refusals, and due runs made
exactly once per period by two schedulers at once, missed periods caught up."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from service.schedule import Cadence, Period, Recurrence
from tests.conftest import BIN
from tests.e2e.conftest import Stack, wait_for_job

pytestmark = pytest.mark.usefixtures("clean_state")
BODY: dict[str, object] = {"cadence": "monthly", "period": "previous_month", "granularity": "daily"}


def schedules_url(stack: Stack, org: uuid.UUID) -> str:
    return f"{stack.base}/analytics/v1/orgs/{org}/export-schedules"


async def create(
    http: aiohttp.ClientSession, stack: Stack, org: uuid.UUID, body: dict[str, object]
) -> dict[str, Any]:
    async with http.post(schedules_url(stack, org), json=body, headers=stack.auth(org)) as reply:
        assert reply.status == 201, await reply.text()
        created: dict[str, Any] = await reply.json()
        assert (
            reply.headers["Location"] == f"/analytics/v1/orgs/{org}/export-schedules/{created['scheduleId']}"
        )
    return created


async def test_a_schedule_is_created_read_changed_and_deleted(
    http: aiohttp.ClientSession, stack: Stack
) -> None:
    org = uuid.uuid4()
    before = datetime.now(UTC)
    created = await create(http, stack, org, BODY)
    assert {k: created[k] for k in ("timeZone", "runAtHour", "enabled", "format", "schema", "models")} == {
        "timeZone": "UTC",
        "runAtHour": 6,
        "enabled": True,
        "format": "csv",
        "schema": "native",
        "models": None,
    }
    next_run = datetime.fromisoformat(created["nextRunAt"])
    assert next_run > before
    assert (next_run.day, next_run.hour) == (1, 6)
    assert (created["lastRunAt"], created["lastJobId"], created["createdBy"]) == (
        None,
        None,
        "finance@example.com",
    )
    one = f"{schedules_url(stack, org)}/{created['scheduleId']}"
    async with http.get(schedules_url(stack, org), headers=stack.auth(org)) as reply:
        assert (await reply.json())["items"] == [created]
    async with http.get(one, headers=stack.auth(org)) as reply:
        assert await reply.json() == created
    other = uuid.uuid4()
    async with http.get(
        f"{schedules_url(stack, other)}/{created['scheduleId']}", headers=stack.auth(other)
    ) as reply:
        assert reply.status == 404  # another org's schedule is not found
    async with http.patch(
        one, json={"runAtHour": 7, "timeZone": "Europe/Berlin"}, headers=stack.auth(org)
    ) as reply:
        assert reply.status == 200, await reply.text()
        changed = await reply.json()
    assert (changed["runAtHour"], changed["timeZone"], changed["cadence"]) == (7, "Europe/Berlin", "monthly")
    assert datetime.fromisoformat(changed["nextRunAt"]).astimezone(ZoneInfo("Europe/Berlin")).hour == 7
    async with http.patch(one, json={}, headers=stack.auth(org)) as reply:
        assert reply.status == 400
    async with http.delete(one, headers=stack.auth(org, scope="exports:read")) as reply:
        assert reply.status == 403  # changing takes exports:write
    async with http.delete(one, headers=stack.auth(org)) as reply:
        assert reply.status == 204
    async with http.get(one, headers=stack.auth(org)) as reply:
        assert reply.status == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cadence": "hourly"}, "cadence"),
        ({"period": "yesterday"}, "period"),
        ({"timeZone": "Mars/Olympus_Mons"}, "timeZone"),
        ({"timeZone": "Asia/Kolkata"}, "timeZone"),  # +05:30: hourly rollups cannot be split
        ({"runAtHour": 24}, "runAtHour"),
        ({"runAtHour": -1}, "runAtHour"),
        ({"schema": "focus-1.0", "timeZone": "Europe/Berlin"}, "timeZone"),
        ({"granularity": "weekly"}, "granularity"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    http: aiohttp.ClientSession, stack: Stack, change: dict[str, object], field: str
) -> None:
    org = uuid.uuid4()
    async with http.post(
        schedules_url(stack, org), json={**BODY, **change}, headers=stack.auth(org)
    ) as reply:
        assert reply.status == 400, await reply.text()
        assert field in (await reply.json())["errors"]


async def test_two_schedulers_make_each_missed_period_once(http: aiohttp.ClientSession, stack: Stack) -> None:
    org = uuid.uuid4()
    created = await create(http, stack, org, {**BODY, "period": "previous_month"})
    # The scheduler was away for the last two monthly runs or so: make them due.
    recurrence = Recurrence(Cadence.MONTHLY, Period.PREVIOUS_MONTH, "UTC", 6)
    now = datetime.now(UTC)
    first = recurrence.next_run(now - timedelta(days=62))
    due = list(recurrence.runs(first, now))
    assert len(due) >= 2
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute(
            "UPDATE analytics.export_schedules SET next_run_at = $2 WHERE schedule_id = $1",
            uuid.UUID(created["scheduleId"]),
            first,
        )
    finally:
        await conn.close()
    # A second scheduler beside the stack's own: both send a run_schedules tick every second.
    log = (stack.logs / "scheduler-2.log").open("wb")
    second = await asyncio.create_subprocess_exec(
        str(BIN / "analytics-exports"), "scheduler", env=stack.env, stdout=log, stderr=log
    )
    try:
        url = f"{stack.exports_url(org)}?scheduleId={created['scheduleId']}"
        deadline = time.monotonic() + 30
        while True:
            async with http.get(url, headers=stack.auth(org)) as reply:
                jobs = (await reply.json())["items"]
            if len(jobs) >= len(due) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # a few more ticks from both schedulers: nothing more may appear
        async with http.get(url, headers=stack.auth(org)) as reply:
            jobs = (await reply.json())["items"]
    finally:
        second.terminate()
        await asyncio.wait_for(second.wait(), timeout=30)
    periods = sorted((job["timeRange"]["start"], job["timeRange"]["end"]) for job in jobs)
    expected = sorted(
        tuple(moment.isoformat().replace("+00:00", "Z") for moment in recurrence.period_of(run))
        for run in due
    )
    assert periods == expected
    assert {job["scheduleId"] for job in jobs} == {created["scheduleId"]}
    for job in jobs:
        finished = await wait_for_job(http, stack, org, job["jobId"])
        assert finished["status"] == "succeeded", finished
    async with http.get(
        f"{schedules_url(stack, org)}/{created['scheduleId']}", headers=stack.auth(org)
    ) as reply:
        schedule = await reply.json()
    assert datetime.fromisoformat(schedule["nextRunAt"]) == recurrence.next_run(now)
    assert schedule["lastJobId"] in {job["jobId"] for job in jobs}


def test_the_cli_creates_lists_updates_and_deletes_schedules(stack: Stack) -> None:
    org = uuid.uuid4()
    env = {**stack.env, "API": stack.base, "TOKEN": stack.token(org), "ORG": str(org)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / "analytics-exports"), "schedule", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    made = cli(
        "create",
        "--cadence",
        "daily",
        "--period",
        "month_to_date",
        "--granularity",
        "daily",
        "--time-zone",
        "America/New_York",
        "--model",
        "gpt-4o",
    )
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert (created["period"], created["timeZone"], created["models"]) == (
        "month_to_date",
        "America/New_York",
        ["gpt-4o"],
    )
    listed = cli("list")
    assert [item["scheduleId"] for item in json.loads(listed.stdout)["items"]] == [created["scheduleId"]]
    paused = cli("update", created["scheduleId"], "--disable", "--all-models")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["models"] is None
    assert json.loads(cli("show", created["scheduleId"]).stdout)["enabled"] is False
    refused = cli("update", created["scheduleId"], "--time-zone", "Asia/Kolkata")
    assert refused.returncode == 2
    assert "timeZone" in refused.stderr
    assert cli("delete", created["scheduleId"]).returncode == 0
    gone = cli("show", created["scheduleId"])
    assert gone.returncode == 2
    assert "404" in gone.stderr
