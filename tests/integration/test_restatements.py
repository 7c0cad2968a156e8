"""Restatements against a real PostgreSQL and S3 (moto): a delivered scheduled export is compared
with the rollups its query reads, in every granularity, zone and schema; nothing is restated while
they agree, and exactly one restatement is made when a row of its period changes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import orjson
import pytest

from service.exporter import Exporter
from service.job import DatasetSchema, ExportFormat, ExportRequest, Granularity, Job, JobStatus
from service.metrics import ExportMetrics
from service.repository import JobRepository, create_pool
from service.restatement import Restater, differences, manifest_totals
from service.rollups import DEFAULT_TABLES
from service.schedule import Cadence, Period, Recurrence, ScheduleSpec
from service.scheduling import ScheduleService
from service.settings import Settings
from service.storage import ObjectStore, open_s3_client
from tests.support.fakes import FakeQueue
from tests.support.rollups import daily_from_hourly, hourly_rollups, insert

pytestmark = pytest.mark.usefixtures("clean_state")
# Two days and a half, starting mid-day: covered_days reads whole days from the daily rollups and
# the partial ones from their hours.
START = datetime(2026, 10, 4, 12, tzinfo=UTC)
END = datetime(2026, 10, 7, tzinfo=UTC)
MODELS = ("gpt-4o", "claude")


@dataclass
class Parts:
    repository: JobRepository
    exporter: Exporter
    settings: Settings


@pytest.fixture
async def parts(settings: Settings) -> AsyncIterator[Parts]:
    pool = await create_pool(settings.database_url, max_size=5)
    async with open_s3_client(settings) as client:
        repository = JobRepository(pool, tables=DEFAULT_TABLES)
        store = ObjectStore(client, settings.export_part_size)
        yield Parts(repository, Exporter(repository, store, settings), settings)
    await pool.close()


async def execute(settings: Settings, statement: str, *args: object) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


async def seed(settings: Settings, org: uuid.UUID) -> None:
    """Hourly rollups around the period, and daily ones that differ from their hours' sums (as a
    platform's may: a daily rollup that took in usage its hours did not), so an export's totals
    depend on which rollups its query reads."""
    hourly = hourly_rollups(org, START - timedelta(hours=12), 96, MODELS)
    daily = [replace(r, cost_total=r.cost_total + 1) for r in daily_from_hourly(hourly)]
    conn = await asyncpg.connect(settings.database_url)
    try:
        await insert(conn, "hourly_rollups", hourly)
        await insert(conn, "daily_rollups", daily)
    finally:
        await conn.close()


async def delivered(parts: Parts, org: uuid.UUID, request: ExportRequest) -> Job:
    """A scheduled export of ``request``'s period, made by a schedule's run and exported."""
    schedules = ScheduleService(parts.repository)
    spec = ScheduleSpec(
        Recurrence(Cadence.DAILY, Period.PREVIOUS_DAY, request.time_zone, 6),
        request.granularity,
        request.models,
        request.output_format,
        request.output_schema,
        enabled=True,
    )
    schedule = await schedules.create(org, "finance@example.com", spec)
    made = await parts.repository.run_schedule(
        schedule, [(schedule.next_run_at, request)], schedule.recurrence.next_run(schedule.next_run_at)
    )
    assert made is not None
    [job] = made
    await parts.exporter.run(job.job_id)
    finished = await parts.repository.get(org, job.job_id)
    assert finished is not None
    assert finished.status is JobStatus.SUCCEEDED
    return finished


async def manifest_of(parts: Parts, job: Job) -> bytes:
    found = await parts.repository.get_manifest(job.org_id, job.job_id)
    assert found is not None
    assert found[1] is not None
    return found[1]


@pytest.mark.parametrize(
    ("granularity", "zone", "schema", "output"),
    [
        (Granularity.HOURLY, "UTC", DatasetSchema.NATIVE, ExportFormat.CSV),
        (Granularity.DAILY, "UTC", DatasetSchema.NATIVE, ExportFormat.CSV),
        (Granularity.MONTHLY, "UTC", DatasetSchema.NATIVE, ExportFormat.PARQUET),
        (Granularity.DAILY, "Europe/Berlin", DatasetSchema.NATIVE, ExportFormat.CSV_GZ),
        (Granularity.MONTHLY, "America/New_York", DatasetSchema.NATIVE, ExportFormat.CSV),
        (Granularity.DAILY, "UTC", DatasetSchema.FOCUS_1_0, ExportFormat.CSV),
        (Granularity.HOURLY, "UTC", DatasetSchema.FOCUS_1_0, ExportFormat.PARQUET),
    ],
)
async def test_an_export_agrees_with_its_rollups_until_a_row_of_its_period_changes(
    parts: Parts, granularity: Granularity, zone: str, schema: DatasetSchema, output: ExportFormat
) -> None:
    org = uuid.uuid4()
    await seed(parts.settings, org)
    request = ExportRequest(org, "finance@example.com", START, END, granularity, None, zone, output, schema)
    job = await delivered(parts, org, request)
    metrics = ExportMetrics()
    restater = Restater(parts.repository, check_interval=0.001, metrics=metrics)
    queue = FakeQueue()
    # The rollups hold what the export counted: nothing to restate
    assert await parts.repository.period_totals(job) == manifest_totals(await manifest_of(parts, job))
    assert await restater.check_due(queue) == []

    # When late usage changes one hour of the period, and its day
    bump = Decimal("2.500000")
    hour = START + timedelta(hours=20)
    await execute(
        parts.settings,
        "UPDATE analytics.hourly_rollups SET cost_total = cost_total + $3, request_count = request_count + 1"
        " WHERE org_id = $1 AND bucket_start = $2 AND model_id = 'claude'",
        org,
        hour,
        bump,
    )
    await execute(
        parts.settings,
        "UPDATE analytics.daily_rollups SET cost_total = cost_total + $3, request_count = request_count + 1"
        " WHERE org_id = $1 AND bucket_start = $2 AND model_id = 'claude'",
        org,
        hour.replace(hour=0),
        bump,
    )
    # Then one restatement of the same schedule and period is made and enqueued, naming the job
    [restatement] = await restater.check_due(queue)
    assert queue.enqueued == [restatement.job_id]
    assert restatement.restatement_of == job.job_id
    assert restatement.schedule_id == job.schedule_id
    assert restatement.request == job.request
    assert (
        metrics.registry.get_sample_value("exports_housekeeping_actions_total", {"action": "restated"}) == 1
    )
    # A second check makes no other (the first job has its restatement; this one is not delivered)
    assert await restater.check_due(queue) == []
    # Exported, its totals are the rollups' new ones, and they moved by exactly the change
    await parts.exporter.run(restatement.job_id)
    new = await manifest_of(parts, restatement)
    assert await parts.repository.period_totals(restatement) == manifest_totals(new)
    moved = differences(orjson.loads(new)["totals"], orjson.loads(await manifest_of(parts, job))["totals"])
    assert moved == {"USD": {"costTotal": "2.500000", "requestCount": 1, "tokensTotal": 0, "errorCount": 0}}
    # And it, in turn, agrees with the rollups: nothing more is made
    assert await restater.check_due(queue) == []
    # The first job stays as it was
    first = await parts.repository.get(org, job.job_id)
    assert first == job


async def test_each_delivered_export_is_checked_once_per_interval_within_the_window(parts: Parts) -> None:
    org = uuid.uuid4()
    await seed(parts.settings, org)
    request = ExportRequest(org, "finance@example.com", START, END, Granularity.HOURLY, MODELS[:1])
    job = await delivered(parts, org, request)
    hourly = Restater(parts.repository, check_interval=3600)
    await execute(
        parts.settings,
        "UPDATE analytics.hourly_rollups SET cost_total = cost_total + 1 WHERE org_id = $1",
        org,
    )
    # The first check restates it; had it been checked within the hour, it would wait
    await execute(
        parts.settings,
        "UPDATE analytics.export_jobs SET totals_checked_at = now() WHERE job_id = $1",
        job.job_id,
    )
    assert await hourly.check_due(FakeQueue()) == []
    later = datetime.now(UTC) + timedelta(hours=1, seconds=1)
    [restatement] = await hourly.check_due(FakeQueue(), now=later)
    assert restatement.restatement_of == job.job_id
    # A delivery older than the window is not compared
    old = await delivered(parts, org, request)
    await execute(
        parts.settings,
        "UPDATE analytics.export_jobs SET completed_at = now() - interval '36 days' WHERE job_id = $1",
        old.job_id,
    )
    await execute(
        parts.settings,
        "UPDATE analytics.hourly_rollups SET cost_total = cost_total + 1 WHERE org_id = $1",
        org,
    )
    assert await hourly.check_due(FakeQueue(), now=later) == []
    # Nor is an export requested through the API (no schedule)
    requested = (await parts.repository.create(request)).job
    await parts.exporter.run(requested.job_id)
    assert await hourly.check_due(FakeQueue(), now=later) == []


async def test_only_the_latest_month_to_date_and_only_enabled_schedules_are_compared(parts: Parts) -> None:
    org = uuid.uuid4()
    await seed(parts.settings, org)
    schedules = ScheduleService(parts.repository)
    spec = ScheduleSpec(
        Recurrence(Cadence.DAILY, Period.MONTH_TO_DATE, "UTC", 6),
        Granularity.DAILY,
        None,
        ExportFormat.CSV,
        DatasetSchema.NATIVE,
        enabled=True,
    )
    schedule = await schedules.create(org, "finance@example.com", spec)
    # Two month-to-date exports of the schedule: the second extends the first
    runs = [
        (
            schedule.next_run_at,
            ExportRequest(org, "f", START, START + timedelta(days=1), Granularity.DAILY, None),
        ),
        (schedule.next_run_at, ExportRequest(org, "f", START, END, Granularity.DAILY, None)),
    ]
    made = await parts.repository.run_schedule(
        schedule, runs, schedule.recurrence.next_run(schedule.next_run_at)
    )
    assert made is not None
    for job in made:
        await parts.exporter.run(job.job_id)
    # and another schedule's delivered export, whose schedule is then disabled
    paused = await delivered(parts, org, ExportRequest(org, "f", START, END, Granularity.HOURLY, None))
    await execute(
        parts.settings,
        "UPDATE analytics.export_schedules SET enabled = false WHERE schedule_id = $1",
        paused.schedule_id,
    )
    # When an hour both cover changes
    for table in ("hourly_rollups", "daily_rollups"):
        await execute(
            parts.settings,
            f"UPDATE analytics.{table} SET error_count = error_count + 1 WHERE org_id = $1",
            org,
        )
    # Then only the latest month-to-date export is restated
    restater = Restater(parts.repository, check_interval=0.001)
    [restatement] = await restater.check_due(FakeQueue())
    assert restatement.restatement_of == made[1].job_id
    # Enabled again, the paused schedule's export is compared again (an interval later)
    await execute(
        parts.settings,
        "UPDATE analytics.export_schedules SET enabled = true WHERE schedule_id = $1",
        paused.schedule_id,
    )
    [again] = await restater.check_due(FakeQueue())
    assert again.restatement_of == paused.job_id
