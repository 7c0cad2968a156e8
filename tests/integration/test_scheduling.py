"""Schedules against a real PostgreSQL: one job per schedule and period, whoever runs the tick."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from service.errors import Conflict, NotFound
from service.job import DatasetSchema, ExportFormat, Granularity, JobStatus
from service.repository import JobRepository, create_pool
from service.rollups import DEFAULT_TABLES
from service.schedule import Cadence, Period, Recurrence, ScheduleSpec
from service.scheduling import MAX_SCHEDULES_PER_ORG, ScheduleService
from service.settings import Settings
from tests.support.fakes import FakeQueue

pytestmark = pytest.mark.usefixtures("clean_state")
NOW = datetime(2026, 11, 17, 9, 30, tzinfo=UTC)


@pytest.fixture
async def repository(settings: Settings) -> AsyncIterator[JobRepository]:
    pool = await create_pool(settings.database_url, max_size=8)
    yield JobRepository(pool, tables=DEFAULT_TABLES)
    await pool.close()


def spec(cadence: str = "monthly", period: str = "previous_month", zone: str = "UTC") -> ScheduleSpec:
    return ScheduleSpec(
        Recurrence(Cadence(cadence), Period(period), zone, 6),
        Granularity.DAILY,
        ("gpt-4o",),
        ExportFormat.CSV_GZ,
        DatasetSchema.NATIVE,
        enabled=True,
    )


async def overdue(settings: Settings, schedule_id: uuid.UUID, next_run_at: datetime) -> None:
    """Pretend the schedule has waited since ``next_run_at`` (a scheduler that was down)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "UPDATE analytics.export_schedules SET next_run_at = $2 WHERE schedule_id = $1",
            schedule_id,
            next_run_at,
        )
    finally:
        await conn.close()


async def test_a_schedule_round_trips_and_first_runs_after_its_creation(repository: JobRepository) -> None:
    service = ScheduleService(repository)
    org = uuid.uuid4()
    created = await service.create(org, "finance@example.com", spec(), now=NOW)
    assert created.next_run_at == datetime(2026, 12, 1, 6, tzinfo=UTC)
    assert await service.get(org, created.schedule_id) == created
    assert await service.all_of(org) == [created]
    with pytest.raises(NotFound):
        await service.get(uuid.uuid4(), created.schedule_id)  # another org's is not found
    await service.delete(org, created.schedule_id)
    with pytest.raises(NotFound):
        await service.delete(org, created.schedule_id)


async def test_a_due_run_makes_one_ordinary_job_for_its_period(
    repository: JobRepository, settings: Settings
) -> None:
    service = ScheduleService(repository)
    org = uuid.uuid4()
    schedule = await service.create(org, "finance@example.com", spec(), now=NOW - timedelta(days=30))
    assert schedule.next_run_at == datetime(2026, 11, 1, 6, tzinfo=UTC)
    queue = FakeQueue()
    [job] = await service.run_due(queue, now=NOW)
    assert (job.time_range_start, job.time_range_end) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    )
    assert (job.schedule_id, job.status, job.requested_by) == (
        schedule.schedule_id,
        JobStatus.PENDING,
        "finance@example.com",
    )
    assert (job.granularity, job.models, job.output_format) == (
        Granularity.DAILY,
        ("gpt-4o",),
        ExportFormat.CSV_GZ,
    )
    assert queue.enqueued == [job.job_id]
    after = await service.get(org, schedule.schedule_id)
    assert (after.next_run_at, after.last_run_at, after.last_job_id) == (
        datetime(2026, 12, 1, 6, tzinfo=UTC),
        datetime(2026, 11, 1, 6, tzinfo=UTC),
        job.job_id,
    )
    assert await service.run_due(queue, now=NOW) == []  # nothing due any more
    [created] = (await repository.events(org, job.job_id, limit=10, cursor=None)).items
    assert (created.event, created.actor) == ("created", "finance@example.com")
    assert created.details["scheduleId"] == str(schedule.schedule_id)
    listed = await repository.list_page(
        org, status=None, limit=10, cursor=None, schedule_id=schedule.schedule_id
    )
    assert [j.job_id for j in listed.items] == [job.job_id]


async def test_ticks_at_once_make_each_period_once(repository: JobRepository, settings: Settings) -> None:
    service = ScheduleService(repository)
    schedules = [
        await service.create(uuid.uuid4(), "f", spec("daily", "previous_day"), now=NOW) for _ in range(5)
    ]
    for schedule in schedules:
        await overdue(settings, schedule.schedule_id, datetime(2026, 11, 8, 6, tzinfo=UTC))
    queue = FakeQueue()
    results = await asyncio.gather(*(service.run_due(queue, now=NOW) for _ in range(4)))
    jobs = [job for made in results for job in made]
    periods = [(job.schedule_id, job.time_range_start) for job in jobs]
    assert len(periods) == len(set(periods)) == 5 * 10  # the runs of the 8th to the 17th, once each
    assert sorted(queue.enqueued) == sorted(job.job_id for job in jobs)


async def test_a_period_made_already_gets_no_second_job_even_if_the_schedule_is_rewound(
    repository: JobRepository, settings: Settings
) -> None:
    service = ScheduleService(repository)
    schedule = await service.create(uuid.uuid4(), "f", spec("daily", "previous_day"), now=NOW)
    await overdue(settings, schedule.schedule_id, datetime(2026, 11, 16, 6, tzinfo=UTC))
    first = await service.run_due(FakeQueue(), now=NOW)
    await overdue(settings, schedule.schedule_id, datetime(2026, 11, 15, 6, tzinfo=UTC))  # a restore, say
    again = await service.run_due(FakeQueue(), now=NOW)
    assert len(first) == 2
    assert len(again) == 1  # only the one period not made before
    assert again[0].time_range_start < min(job.time_range_start for job in first)


async def test_catching_up_skips_periods_before_the_retention_window(
    repository: JobRepository, settings: Settings
) -> None:
    service = ScheduleService(repository, retention_months=2)
    schedule = await service.create(uuid.uuid4(), "f", spec(), now=NOW)
    await overdue(settings, schedule.schedule_id, datetime(2026, 8, 1, 6, tzinfo=UTC))
    made = await service.run_due(FakeQueue(), now=NOW)
    # Runs on the 1st of Aug to Nov export July to October; the cutoff is 2026-09-17, and only
    # October starts after it (the API would refuse the others too).
    assert [job.time_range_start for job in made] == [datetime(2026, 10, 1, tzinfo=UTC)]
    assert (await service.get(schedule.org_id, schedule.schedule_id)).next_run_at == datetime(
        2026, 12, 1, 6, tzinfo=UTC
    )


async def test_a_changed_or_re_enabled_schedule_runs_next_after_now(repository: JobRepository) -> None:
    service = ScheduleService(repository)
    org = uuid.uuid4()
    schedule = await service.create(org, "f", spec(), now=NOW)
    weekly = await service.update(
        org, schedule.schedule_id, lambda _: spec("weekly", "previous_week"), now=NOW
    )
    assert weekly.next_run_at == datetime(2026, 11, 23, 6, tzinfo=UTC)  # the next Monday
    paused = await service.update(
        org, schedule.schedule_id, lambda _: replace_enabled(spec("weekly", "previous_week"), False), now=NOW
    )
    assert not paused.spec.enabled
    assert await service.run_due(FakeQueue(), now=NOW + timedelta(days=30)) == []  # a disabled one never runs
    resumed = await service.update(
        org, schedule.schedule_id, lambda _: spec("weekly", "previous_week"), now=NOW + timedelta(days=30)
    )
    assert resumed.next_run_at == datetime(2026, 12, 21, 6, tzinfo=UTC)  # missed runs are not made


async def test_an_org_has_at_most_so_many_schedules(repository: JobRepository) -> None:
    service = ScheduleService(repository)
    org = uuid.uuid4()
    await asyncio.gather(*(service.create(org, "f", spec(), now=NOW) for _ in range(MAX_SCHEDULES_PER_ORG)))
    with pytest.raises(Conflict):
        await service.create(org, "f", spec(), now=NOW)


def replace_enabled(value: ScheduleSpec, enabled: bool) -> ScheduleSpec:
    return replace(value, enabled=enabled)


async def test_the_backlog_counts_schedules_no_tick_made_in_time(
    repository: JobRepository, settings: Settings
) -> None:
    service = ScheduleService(repository)
    now = datetime.now(UTC)  # the query compares with the database's clock
    late, just_due, paused = [await service.create(uuid.uuid4(), "f", spec(), now=now) for _ in range(3)]
    await overdue(settings, late.schedule_id, now - timedelta(minutes=20))
    await overdue(settings, just_due.schedule_id, now - timedelta(minutes=1))
    await overdue(settings, paused.schedule_id, now - timedelta(minutes=20))
    await service.update(paused.org_id, paused.schedule_id, lambda _: replace_enabled(spec(), False), now=now)
    assert (await repository.backlog()).overdue_schedules == 1


async def test_changing_when_it_runs_loses_no_period(repository: JobRepository, settings: Settings) -> None:
    service = ScheduleService(repository)
    org = uuid.uuid4()
    late = ScheduleSpec(
        Recurrence(Cadence.DAILY, Period.PREVIOUS_DAY, "UTC", 23),
        Granularity.HOURLY,
        None,
        ExportFormat.CSV,
        DatasetSchema.NATIVE,
        enabled=True,
    )
    schedule = await service.create(org, "f", late, now=datetime(2026, 11, 2, 12, tzinfo=UTC))
    [first] = await service.run_due(FakeQueue(), now=datetime(2026, 11, 2, 23, 30, tzinfo=UTC))
    assert first.time_range_start == datetime(2026, 11, 1, tzinfo=UTC)
    early = replace(late, recurrence=Recurrence(Cadence.DAILY, Period.PREVIOUS_DAY, "UTC", 6))
    moved = await service.update(
        org, schedule.schedule_id, lambda _: early, now=datetime(2026, 11, 3, 7, tzinfo=UTC)
    )
    assert moved.next_run_at == datetime(2026, 11, 3, 6, tzinfo=UTC)  # due already: the 2nd is not lost
    [second] = await service.run_due(FakeQueue(), now=datetime(2026, 11, 3, 7, 1, tzinfo=UTC))
    assert second.time_range_start == datetime(2026, 11, 2, tzinfo=UTC)


async def test_a_tick_that_read_a_schedule_before_it_changed_makes_nothing_with_the_old_settings(
    repository: JobRepository, settings: Settings
) -> None:
    service = ScheduleService(repository)
    org = uuid.uuid4()
    schedule = await service.create(org, "f", spec("daily", "previous_day"), now=NOW)
    await overdue(settings, schedule.schedule_id, datetime(2026, 11, 17, 6, tzinfo=UTC))
    [read_by_tick] = await repository.due_schedules(NOW, 10)
    await service.update(
        org,
        schedule.schedule_id,
        lambda _: replace(spec("daily", "previous_day"), output_format=ExportFormat.PARQUET),
        now=NOW,
    )
    run = read_by_tick.next_run_at
    assert (
        await repository.run_schedule(read_by_tick, [(run, read_by_tick.request_for(run))], next_run_at=NOW)
        is None
    )
    [job] = await service.run_due(FakeQueue(), now=NOW)  # the next tick, with the new settings
    assert job.output_format is ExportFormat.PARQUET


async def test_a_schedule_that_cannot_run_does_not_stop_the_others(
    repository: JobRepository, settings: Settings
) -> None:
    service = ScheduleService(repository)
    broken, fine = [
        await service.create(uuid.uuid4(), "f", spec("daily", "previous_day"), now=NOW) for _ in range(2)
    ]
    for schedule in (broken, fine):
        await overdue(settings, schedule.schedule_id, datetime(2026, 11, 17, 6, tzinfo=UTC))
    conn = await asyncpg.connect(settings.database_url)
    try:  # a zone the tz database no longer knows
        await conn.execute(
            "UPDATE analytics.export_schedules SET time_zone = 'Mars/Olympus' WHERE schedule_id = $1",
            broken.schedule_id,
        )
    finally:
        await conn.close()
    made = await service.run_due(FakeQueue(), now=NOW)
    assert [job.schedule_id for job in made] == [fine.schedule_id]
