"""Data retention: the one boundary the API and the rollup pruning both use.

Rollups are kept for DATA_RETENTION_MONTHS calendar months. The API refuses an export that starts
before :func:`retention_cutoff`, and the scheduler's ``prune_rollups`` tick deletes the rollup rows
whose ``bucket_start`` is before :func:`prune_cutoff`, the same boundary as it stood PRUNE_GRACE
earlier: one function, so the two can never disagree, and an export accepted at the very edge
of the window still finds its rows while it waits in the queue or retries.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Final

#: How long rollups outlive the window the API accepts: longer than any accepted export waits and
#: retries (attempts are time-limited to 20 minutes and retried within minutes).
PRUNE_GRACE: Final = timedelta(days=1)


class RollupTable(enum.StrEnum):
    """Every table of rollup rows in the ``analytics`` schema; retention prunes each of them."""

    HOURLY = "hourly_rollups"
    DAILY = "daily_rollups"


def months_before(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months earlier (clamped to the month's last day)."""
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    days = (datetime(year + month // 12, month % 12 + 1, 1) - datetime(year, month, 1)).days
    return moment.replace(year=year, month=month, day=min(moment.day, days))


def retention_cutoff(now: datetime, retention_months: int) -> datetime:
    """The oldest instant still kept, in UTC: an export may not start before it, and a rollup row
    whose ``bucket_start`` is before it is deleted (a row exactly at the cutoff is kept)."""
    return months_before(now.astimezone(UTC), retention_months)


def prune_cutoff(now: datetime, retention_months: int) -> datetime:
    """Rollup rows whose ``bucket_start`` is before this are deleted: the API's boundary as it was
    PRUNE_GRACE ago, so no export the API accepted since then loses a row it may read."""
    return retention_cutoff(now - PRUNE_GRACE, retention_months)
