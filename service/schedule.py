"""A recurring export: when it runs (its cadence, at a local hour of its time zone) and which
period each run exports. Pure calendar arithmetic; the scheduling service stores and runs them.

- Runs: ``daily`` at ``run_at_hour`` every local day, ``weekly`` on Mondays, ``monthly`` on the
  1st. An hour a daylight-saving change skips runs at the next wall-clock hour; an hour it
  repeats runs once, at its first occurrence.
- Periods, from the local date D of the run: ``previous_day`` [D-1, D), ``previous_week`` the
  Monday-to-Monday week before D's week, ``previous_month`` the calendar month before D's month,
  ``month_to_date`` [the 1st of the month of D-1, D): on the 1st, the whole month just ended.
  Boundaries are local midnights, as instants (whole hours: the zone's offsets are).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from service.job import DatasetSchema, ExportFormat, ExportRequest, Granularity

#: How many runs one pass may catch up for a schedule (the oldest first); the rest wait a tick.
MAX_CATCH_UP: Final = 60
#: A run this late has been missed by every tick since (they come every EXPORT_WORKER_INTERVAL):
#: the schedule counts as overdue (exports_schedules_overdue).
SCHEDULE_OVERDUE_SECONDS: Final = 300.0


class Cadence(enum.StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class Period(enum.StrEnum):
    PREVIOUS_DAY = "previous_day"
    PREVIOUS_WEEK = "previous_week"
    PREVIOUS_MONTH = "previous_month"
    MONTH_TO_DATE = "month_to_date"


@dataclass(frozen=True, slots=True)
class Recurrence:
    """When a schedule runs and what each run exports."""

    cadence: Cadence
    period: Period
    time_zone: str
    run_at_hour: int

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def _run_on(self, day: date) -> datetime:
        """The run instant on local ``day`` (UTC). A skipped wall-clock hour maps forward."""
        local = datetime.combine(day, time(self.run_at_hour), tzinfo=self._zone())
        # Round trip through UTC: a time in a DST gap comes back an hour later, a repeated one
        # as its first occurrence (fold=0).
        return local.astimezone(UTC)

    def _run_days(self, start: date) -> Iterator[date]:
        """Local days with a run, from ``start`` on."""
        day = start
        while True:
            if (
                self.cadence is Cadence.DAILY
                or (self.cadence is Cadence.WEEKLY and day.weekday() == 0)
                or (self.cadence is Cadence.MONTHLY and day.day == 1)
            ):
                yield day
            day += timedelta(days=1)

    def next_run(self, after: datetime) -> datetime:
        """The first run strictly after ``after``."""
        local_day = after.astimezone(self._zone()).date() - timedelta(days=1)
        for day in self._run_days(local_day):
            run = self._run_on(day)
            if run > after:
                return run
        raise AssertionError("unreachable: run days never end")

    def runs(self, first: datetime, until: datetime) -> Iterator[datetime]:
        """Runs from ``first`` (a run time) up to and including ``until``, oldest first."""
        run = first
        while run <= until:
            yield run
            run = self.next_run(run)

    def day_of(self, run: datetime) -> date:
        """The local day a run was scheduled for: its own date, or the day before when a skipped
        hour pushed it past midnight (a run at 23:00 on a day whose 23:00 does not exist)."""
        local = run.astimezone(self._zone())
        return local.date() - timedelta(days=1) if local.hour < self.run_at_hour else local.date()

    def period_of(self, run: datetime) -> tuple[datetime, datetime]:
        """The ``[start, end)`` instants the run at ``run`` exports."""
        zone = self._zone()
        today = self.day_of(run)
        if self.period is Period.PREVIOUS_DAY:
            start, end = today - timedelta(days=1), today
        elif self.period is Period.PREVIOUS_WEEK:
            end = today - timedelta(days=today.weekday())
            start = end - timedelta(days=7)
        elif self.period is Period.PREVIOUS_MONTH:
            end = today.replace(day=1)
            start = (end - timedelta(days=1)).replace(day=1)
        else:
            end = today
            start = (today - timedelta(days=1)).replace(day=1)
        return _midnight(start, zone), _midnight(end, zone)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What a schedule does: when it runs, and the export each run makes."""

    recurrence: Recurrence
    granularity: Granularity
    #: ``None`` means every model.
    models: tuple[str, ...] | None
    output_format: ExportFormat
    output_schema: DatasetSchema
    enabled: bool


@dataclass(frozen=True, slots=True)
class Schedule:
    schedule_id: uuid.UUID
    org_id: uuid.UUID
    created_by: str
    spec: ScheduleSpec
    next_run_at: datetime
    last_run_at: datetime | None
    last_job_id: uuid.UUID | None
    created_at: datetime
    #: Also the row's version: an update or a tick writes only over the row it read.
    updated_at: datetime

    @property
    def recurrence(self) -> Recurrence:
        return self.spec.recurrence

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Schedule:
        models = row["models"]
        return cls(
            schedule_id=row["schedule_id"],
            org_id=row["org_id"],
            created_by=row["created_by"],
            spec=ScheduleSpec(
                recurrence=Recurrence(
                    Cadence(row["cadence"]), Period(row["period"]), row["time_zone"], row["run_at_hour"]
                ),
                granularity=Granularity(str(row["granularity"])),
                models=tuple(models) if models else None,
                output_format=ExportFormat(row["output_format"]),
                output_schema=DatasetSchema(row["output_schema"]),
                enabled=row["enabled"],
            ),
            next_run_at=row["next_run_at"],
            last_run_at=row["last_run_at"],
            last_job_id=row["last_job_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def request_for(self, run: datetime) -> ExportRequest:
        """The ordinary export the run at ``run`` creates."""
        start, end = self.recurrence.period_of(run)
        return ExportRequest(
            org_id=self.org_id,
            requested_by=self.created_by,
            start=start,
            end=end,
            granularity=self.spec.granularity,
            models=self.spec.models,
            time_zone=self.recurrence.time_zone,
            output_format=self.spec.output_format,
            output_schema=self.spec.output_schema,
        )
