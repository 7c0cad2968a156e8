"""Recurring exports: the API's schedule use cases, and the tick that makes each due run's job."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final

from service.errors import Conflict, DatabaseUnavailable, NotFound
from service.job import ExportRequest, Job
from service.metrics import ExportMetrics
from service.queue import JobQueue, hand_over
from service.repository import JobRepository
from service.retention import retention_cutoff
from service.schedule import MAX_CATCH_UP, Schedule, ScheduleSpec

log = logging.getLogger(__name__)
#: Schedules an org may have (the list is one page).
MAX_SCHEDULES_PER_ORG: Final = 100
#: Due schedules read at a time; a tick goes on reading batches for TICK_BUDGET_SECONDS.
TICK_BATCH: Final = 200
TICK_BUDGET_SECONDS: Final = 20.0
#: Reads and writes an update may take while ticks keep changing the schedule.
UPDATE_ATTEMPTS: Final = 5


class ScheduleService:
    def __init__(
        self,
        repository: JobRepository,
        *,
        retention_months: int | None = None,
        metrics: ExportMetrics | None = None,
    ) -> None:
        self._repository = repository
        self._retention_months = retention_months
        self._metrics = metrics or ExportMetrics()

    async def create(
        self, org_id: uuid.UUID, created_by: str, spec: ScheduleSpec, now: datetime | None = None
    ) -> Schedule:
        """A new schedule; its first run is the first run time after now."""
        now = now or datetime.now(UTC)
        schedule = Schedule(
            schedule_id=uuid.uuid4(),
            org_id=org_id,
            created_by=created_by,
            spec=spec,
            next_run_at=spec.recurrence.next_run(now),
            last_run_at=None,
            last_job_id=None,
            created_at=now,
            updated_at=now,
        )
        created = await self._repository.create_schedule(schedule, MAX_SCHEDULES_PER_ORG)
        log.info(
            "schedule created",
            extra={
                "schedule_id": str(created.schedule_id),
                "org_id": str(org_id),
                "next_run_at": created.next_run_at,
            },
        )
        return created

    async def get(self, org_id: uuid.UUID, schedule_id: uuid.UUID) -> Schedule:
        schedule = await self._repository.get_schedule(org_id, schedule_id)
        if schedule is None:
            raise NotFound("no such export schedule")
        return schedule

    async def all_of(self, org_id: uuid.UUID) -> list[Schedule]:
        return await self._repository.list_schedules(org_id, MAX_SCHEDULES_PER_ORG)

    async def update(
        self,
        org_id: uuid.UUID,
        schedule_id: uuid.UUID,
        change: Callable[[Schedule], ScheduleSpec],
        now: datetime | None = None,
    ) -> Schedule:
        """Apply ``change`` (the current schedule -> its new spec) and store it, over exactly the
        row it read: if a tick or another update wrote the row meanwhile, read it again and
        reapply. When the runs change (cadence, period, zone, hour), the next run is the new
        recurrence's first after the last run made, so no period between is lost; when the
        schedule is enabled again, its first run after now (runs missed while disabled are not
        made)."""
        now = now or datetime.now(UTC)
        for _ in range(UPDATE_ATTEMPTS):
            current = await self.get(org_id, schedule_id)
            spec = change(current)
            if spec.enabled and not current.spec.enabled:
                next_run_at = spec.recurrence.next_run(now)
            elif spec.recurrence != current.recurrence:
                next_run_at = spec.recurrence.next_run(current.last_run_at or now)
            else:
                next_run_at = current.next_run_at
            updated = await self._repository.update_schedule(
                replace(current, spec=spec, next_run_at=next_run_at)
            )
            if updated is not None:
                return updated
        raise Conflict("the export schedule kept changing while it was updated; try again")

    async def delete(self, org_id: uuid.UUID, schedule_id: uuid.UUID) -> None:
        if not await self._repository.delete_schedule(org_id, schedule_id):
            raise NotFound("no such export schedule")

    async def run_due(self, queue: JobQueue, now: datetime | None = None) -> list[Job]:
        """Make the job of every due run, oldest first, and enqueue it: at most MAX_CATCH_UP runs
        per schedule, batches of due schedules for TICK_BUDGET_SECONDS (the next tick goes on;
        ticks at once share the work: each schedule's runs are made by one). A run whose period
        starts before the retention window is skipped (its rollups are gone). Safe to run
        anywhere at once: each schedule's runs are made once, by whoever moves its next run."""
        self._metrics.ticks.labels("schedules").inc()
        now = now or datetime.now(UTC)
        oldest = retention_cutoff(now, self._retention_months) if self._retention_months else None
        made: list[Job] = []
        tried: set[uuid.UUID] = set()
        deadline = time.monotonic() + TICK_BUDGET_SECONDS
        while time.monotonic() < deadline:
            batch = await self._repository.due_schedules(now, TICK_BATCH, tried)
            if not batch:
                break
            for schedule in batch:
                tried.add(schedule.schedule_id)
                try:
                    made += await self._run(queue, schedule, now, oldest)
                except DatabaseUnavailable:
                    raise  # the whole tick is skipped; the next one goes on
                except Exception:
                    # One schedule that cannot run (a zone the tz database dropped, say) must not
                    # stop the others; it stays due, and overdue on the dashboard.
                    log.exception(
                        "a schedule could not run; the next tick tries again",
                        extra={"schedule_id": str(schedule.schedule_id), "org_id": str(schedule.org_id)},
                    )
        return made

    async def _run(
        self, queue: JobQueue, schedule: Schedule, now: datetime, oldest: datetime | None
    ) -> list[Job]:
        runs: list[tuple[datetime, ExportRequest]] = []
        run = schedule.next_run_at
        while run <= now and len(runs) < MAX_CATCH_UP:
            request = schedule.request_for(run)
            if oldest is None or request.start >= oldest:
                runs.append((run, request))
            run = schedule.recurrence.next_run(run)
        jobs = await self._repository.run_schedule(schedule, runs, next_run_at=run)
        if jobs is None:
            return []  # another tick made these runs, or the schedule changed: the next tick goes on
        for job in jobs:
            await self._enqueue(queue, job)
        log.info(
            "schedule ran",
            extra={
                "schedule_id": str(schedule.schedule_id),
                "org_id": str(schedule.org_id),
                "runs": len(runs),
                "jobs": len(jobs),
                "next_run_at": run,
            },
        )
        return jobs

    async def _enqueue(self, queue: JobQueue, job: Job) -> None:
        ctx = {"job_id": str(job.job_id), "org_id": str(job.org_id), "schedule_id": str(job.schedule_id)}
        await hand_over(queue, self._repository.mark_enqueued, job.job_id, "scheduled export", ctx)
