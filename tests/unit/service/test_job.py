"""Coverage: the whole hours an export counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.job import Coverage


def at(day: int, hour: int, minute: int = 0, second: int = 0, tz: timezone = UTC) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=tz)


@pytest.mark.parametrize(
    ("start", "end", "first", "last"),
    [
        (at(1, 0), at(2, 0), at(1, 0), at(2, 0)),  # aligned: the range itself
        (at(1, 0, 30), at(1, 5, 45), at(1, 1), at(1, 5)),  # partial hours at both ends left out
        (at(1, 0, 0, 1), at(1, 2), at(1, 1), at(1, 2)),  # one second past the hour starts the next
        (at(1, 2, 0, 0, timezone(timedelta(hours=2))), at(1, 5), at(1, 0), at(1, 5)),  # offsets
    ],
)
def test_coverage_is_the_whole_hours_inside_the_range(
    start: datetime, end: datetime, first: datetime, last: datetime
) -> None:
    coverage = Coverage.of(start, end)
    assert (coverage.start, coverage.end) == (first, last)
    assert not coverage.empty


@pytest.mark.parametrize(
    ("start", "end"),
    [(at(1, 0, 10), at(1, 0, 50)), (at(1, 0, 30), at(1, 1, 29)), (at(1, 1, 0, 1), at(1, 2))],
)
def test_a_range_without_a_whole_hour_covers_nothing(start: datetime, end: datetime) -> None:
    coverage = Coverage.of(start, end)
    assert coverage.empty
    assert coverage.start == coverage.end
