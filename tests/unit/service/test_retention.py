"""The retention cutoff: one boundary for the API's earliest start and for rollup pruning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.api.schemas import parse_export_request
from service.errors import ValidationFailed
from service.housekeeping import Housekeeper
from service.retention import PRUNE_GRACE, retention_cutoff
from service.settings import Settings
from service.storage import ObjectStore
from tests.support.fakes import ORG_A, FakeRepository, FakeS3

CLOCKS = [
    datetime(2026, 11, 29, 12, tzinfo=UTC),
    datetime(2026, 3, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # clamped to the end of February
    datetime(2027, 1, 15, 0, 0, 0, 1, tzinfo=UTC),  # across a year, one microsecond past midnight
    datetime(2028, 2, 29, 6, 30, tzinfo=UTC),  # a leap day
]


def request_starting(start: datetime) -> dict[str, object]:
    return {
        "timeRange": {
            "start": start.isoformat().replace("+00:00", "Z"),
            "end": (start + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        },
        "granularity": "hourly",
    }


async def pruned_before(now: datetime, months: int) -> datetime:
    """The cutoff the housekeeper hands the repository for a tick at ``now``."""
    repo = FakeRepository()
    store = ObjectStore(FakeS3(), 8 * 1024 * 1024, retry_window=0)  # type: ignore[arg-type]
    await Housekeeper(repo, store, Settings(data_retention_months=months, rollup_prune=True)).prune_rollups(
        now
    )  # type: ignore[arg-type]
    cutoffs = {args[1] for args in repo.called("prune_rollups")}
    assert len(cutoffs) == 1
    return cutoffs.pop()


@pytest.mark.parametrize("now", CLOCKS)
@pytest.mark.parametrize("months", [1, 13, 240])
async def test_pruning_deletes_exactly_what_the_api_refused_a_grace_period_ago(
    now: datetime, months: int
) -> None:
    # Given the cutoff a prune tick at `now` deletes before
    cutoff = await pruned_before(now, months)
    then = now - PRUNE_GRACE
    # Then the API, one grace period earlier, accepted an export starting exactly there (its rows
    # are kept), and everything the API accepts since then starts at or after the cutoff
    accepted = parse_export_request(request_starting(cutoff), ORG_A, "a", retention_months=months, now=then)
    assert accepted.start == cutoff
    assert retention_cutoff(now, months) >= cutoff
    # And refused one starting a microsecond earlier (the first instant whose rows are deleted)
    with pytest.raises(ValidationFailed):
        parse_export_request(
            request_starting(cutoff - timedelta(microseconds=1)),
            ORG_A,
            "a",
            retention_months=months,
            now=then,
        )


def test_the_cutoff_counts_calendar_months_in_utc() -> None:
    # 2026-03-01T01:00+02:00 is still February in UTC: 13 months back is January 2025, not February
    now = datetime(2026, 3, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert retention_cutoff(now, 13) == datetime(2025, 1, 28, 23, tzinfo=UTC)
    assert retention_cutoff(now, 13) == retention_cutoff(now.astimezone(UTC), 13)
