"""When a schedule runs and which period each run exports, in its own time zone."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from service.schedule import Cadence, Period, Recurrence


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def recurrence(cadence: str, period: str, zone: str = "UTC", hour: int = 6) -> Recurrence:
    return Recurrence(Cadence(cadence), Period(period), zone, hour)


@pytest.mark.parametrize(
    ("cadence", "after", "expected"),
    [
        ("daily", "2026-11-03T05:59:59+00:00", "2026-11-03T06:00:00+00:00"),
        ("daily", "2026-11-03T06:00:00+00:00", "2026-11-04T06:00:00+00:00"),  # strictly after
        ("weekly", "2026-11-03T07:00:00+00:00", "2026-11-09T06:00:00+00:00"),  # the next Monday
        ("weekly", "2026-11-09T05:00:00+00:00", "2026-11-09T06:00:00+00:00"),
        ("monthly", "2026-11-01T06:00:00+00:00", "2026-12-01T06:00:00+00:00"),
        ("monthly", "2026-12-31T23:00:00+00:00", "2027-01-01T06:00:00+00:00"),
    ],
)
def test_the_next_run_in_utc(cadence: str, after: str, expected: str) -> None:
    assert recurrence(cadence, "previous_day").next_run(utc(after)) == utc(expected)


def test_runs_are_at_the_local_hour_across_a_daylight_saving_change() -> None:
    daily = recurrence("daily", "previous_day", "Europe/Berlin", 6)
    runs = list(daily.runs(utc("2026-10-24T06:00:00+02:00"), utc("2026-10-26T12:00:00+00:00")))
    assert runs == [
        utc("2026-10-24T06:00:00+02:00"),
        utc("2026-10-25T06:00:00+01:00"),
        utc("2026-10-26T06:00:00+01:00"),
    ]


def test_an_hour_the_clocks_skip_runs_an_hour_later_and_a_repeated_one_once() -> None:
    spring = recurrence("daily", "previous_day", "Europe/Berlin", 2)
    assert spring.next_run(utc("2026-03-28T12:00:00+00:00")) == utc("2026-03-29T03:00:00+02:00")
    autumn = recurrence("daily", "previous_day", "Europe/Berlin", 2)
    first = autumn.next_run(utc("2026-10-24T12:00:00+00:00"))
    assert first == utc("2026-10-25T02:00:00+02:00")
    assert autumn.next_run(first) == utc("2026-10-26T02:00:00+01:00")  # not again an hour later


@pytest.mark.parametrize(
    ("period", "run", "start", "end"),
    [
        (
            "previous_day",
            "2026-11-03T06:00:00+00:00",
            "2026-11-02T00:00:00+00:00",
            "2026-11-03T00:00:00+00:00",
        ),
        # 2026-11-04 is a Wednesday: the week before its week is Mon 26 Oct - Mon 2 Nov.
        (
            "previous_week",
            "2026-11-04T06:00:00+00:00",
            "2026-10-26T00:00:00+00:00",
            "2026-11-02T00:00:00+00:00",
        ),
        (
            "previous_week",
            "2026-11-02T06:00:00+00:00",
            "2026-10-26T00:00:00+00:00",
            "2026-11-02T00:00:00+00:00",
        ),
        (
            "previous_month",
            "2026-03-01T06:00:00+00:00",
            "2026-02-01T00:00:00+00:00",
            "2026-03-01T00:00:00+00:00",
        ),
        (
            "previous_month",
            "2027-01-15T06:00:00+00:00",
            "2026-12-01T00:00:00+00:00",
            "2027-01-01T00:00:00+00:00",
        ),
        (
            "month_to_date",
            "2026-11-17T06:00:00+00:00",
            "2026-11-01T00:00:00+00:00",
            "2026-11-17T00:00:00+00:00",
        ),
        # On the 1st, month to date is the whole month just ended (never an empty range).
        (
            "month_to_date",
            "2026-12-01T06:00:00+00:00",
            "2026-11-01T00:00:00+00:00",
            "2026-12-01T00:00:00+00:00",
        ),
        (
            "month_to_date",
            "2026-11-02T06:00:00+00:00",
            "2026-11-01T00:00:00+00:00",
            "2026-11-02T00:00:00+00:00",
        ),
    ],
)
def test_the_period_of_a_run(period: str, run: str, start: str, end: str) -> None:
    assert recurrence("daily", period).period_of(utc(run)) == (utc(start), utc(end))


def test_periods_are_local_days_and_months_as_instants() -> None:
    berlin = recurrence("monthly", "previous_month", "Europe/Berlin")
    # October 2026 in Berlin: 31 days and one hour (the clocks go back on the 25th).
    start, end = berlin.period_of(utc("2026-11-01T06:00:00+01:00"))
    assert (start, end) == (utc("2026-10-01T00:00:00+02:00"), utc("2026-11-01T00:00:00+01:00"))
    assert (end - start).total_seconds() == (31 * 24 + 1) * 3600
    new_york = recurrence("daily", "previous_day", "America/New_York", 7)
    assert new_york.period_of(utc("2026-03-09T07:00:00-04:00")) == (
        utc("2026-03-08T00:00:00-05:00"),
        utc("2026-03-09T00:00:00-04:00"),  # a 23-hour day
    )


def test_a_run_late_in_the_utc_day_takes_its_local_date() -> None:
    tokyo = recurrence("daily", "previous_day", "Asia/Tokyo", 1)
    run = tokyo.next_run(utc("2026-11-02T12:00:00+00:00"))
    assert run == utc("2026-11-03T01:00:00+09:00")  # 16:00 UTC on the 2nd
    assert tokyo.period_of(run) == (utc("2026-11-02T00:00:00+09:00"), utc("2026-11-03T00:00:00+09:00"))


def test_catching_up_yields_every_missed_run_oldest_first() -> None:
    weekly = recurrence("weekly", "previous_week")
    first = utc("2026-10-05T06:00:00+00:00")
    runs = list(weekly.runs(first, utc("2026-10-27T00:00:00+00:00")))
    assert runs == [utc(f"2026-10-{day}T06:00:00+00:00") for day in ("05", "12", "19", "26")]
    periods = [weekly.period_of(run) for run in runs]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(periods))  # no gap, no overlap


def test_a_run_a_clock_change_pushes_past_midnight_still_exports_its_own_day() -> None:
    # America/Nuuk moved its clocks forward at local midnight before 2026-03-29: the 23:00 run of
    # the 28th happens at 00:00 of the 29th on the wall clock, and still exports the 27th.
    nuuk = recurrence("daily", "previous_day", "America/Nuuk", 23)
    runs = list(nuuk.runs(nuuk.next_run(utc("2026-03-25T12:00:00+00:00")), utc("2026-04-01T12:00:00+00:00")))
    periods = [nuuk.period_of(run) for run in runs]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(periods))  # every day once, in order
    assert len(set(periods)) == len(runs) == 7
