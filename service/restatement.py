"""Restatements: a scheduled export already delivered whose period's totals no longer match the
rollups (usage that arrived late, a corrected row) is exported again, as a new job of the same
schedule and period that names the job it restates; the earlier job and its file stay. When the
restatement succeeds, ``export.restated`` tells the org both sets of totals and their differences.

The ``restate_exports`` tick compares each scheduled export delivered in the last
RESTATEMENT_WINDOW at most once per RESTATEMENT_CHECK_INTERVAL: the totals its manifest states
against one aggregate over the rollups its query read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import orjson

from service.errors import DatabaseUnavailable
from service.job import Job
from service.metrics import ExportMetrics
from service.queue import JobQueue, hand_over
from service.repository import JobRepository

log = logging.getLogger(__name__)
#: How far back delivered exports are compared with the rollups.
RESTATEMENT_WINDOW: Final = timedelta(days=35)
#: Jobs compared at a time; a tick goes on for TICK_BUDGET_SECONDS (the next one goes on).
CHECK_BATCH: Final = 200
TICK_BUDGET_SECONDS: Final = 20.0

#: Currency -> (cost, requests, tokens, errors).
PeriodTotals = dict[str, tuple[Decimal, int, int, int]]


def manifest_totals(manifest: bytes) -> PeriodTotals:
    """The totals a manifest states, as :meth:`JobRepository.period_totals` reads them."""
    return {
        currency: (Decimal(t["costTotal"]), t["requestCount"], t["tokensTotal"], t["errorCount"])
        for currency, t in orjson.loads(manifest)["totals"].items()
    }


def differences(
    new: Mapping[str, Mapping[str, Any]], old: Mapping[str, Mapping[str, Any]]
) -> dict[str, object]:
    """Per currency, each manifest total of ``new`` minus ``old`` (a currency missing from one
    counts zero there): money as exact decimal strings, counts as integers."""
    zero = {"costTotal": "0", "requestCount": 0, "tokensTotal": 0, "errorCount": 0}
    result: dict[str, object] = {}
    for currency in sorted({*new, *old}):
        after, before = new.get(currency, zero), old.get(currency, zero)
        result[currency] = {
            "costTotal": format(Decimal(str(after["costTotal"])) - Decimal(str(before["costTotal"])), "f"),
            **{k: int(after[k]) - int(before[k]) for k in ("requestCount", "tokensTotal", "errorCount")},
        }
    return result


class Restater:
    def __init__(
        self, repository: JobRepository, *, check_interval: float, metrics: ExportMetrics | None = None
    ) -> None:
        self._repository = repository
        self._check_interval = timedelta(seconds=check_interval)
        self._metrics = metrics or ExportMetrics()

    async def check_due(self, queue: JobQueue, now: datetime | None = None) -> list[Job]:
        """Compare every delivered scheduled export due for a check; restate each whose period's
        totals changed. Safe to run anywhere at once: a job is checked by one tick at a time, and
        restated at most once (a unique index)."""
        self._metrics.ticks.labels("restatements").inc()
        now = now or datetime.now(UTC)
        made: list[Job] = []
        deadline = time.monotonic() + TICK_BUDGET_SECONDS
        while time.monotonic() < deadline:
            batch = await self._repository.claim_totals_checks(
                now - RESTATEMENT_WINDOW, now - self._check_interval, CHECK_BATCH
            )
            for job, manifest in batch:
                try:
                    restatement = await self._check(job, manifest)
                except DatabaseUnavailable:
                    raise  # the whole tick is skipped; the next one goes on
                except Exception:
                    log.exception(
                        "a delivered export could not be compared; it is compared again an interval later",
                        extra={"job_id": str(job.job_id), "org_id": str(job.org_id)},
                    )
                    continue
                if restatement is not None:
                    made.append(restatement)
                    self._metrics.housekeeping.labels("restated").inc()
                    ctx = {"job_id": str(restatement.job_id), "org_id": str(restatement.org_id)}
                    await hand_over(
                        queue, self._repository.mark_enqueued, restatement.job_id, "restatement", ctx
                    )
            if len(batch) < CHECK_BATCH:
                break
        return made

    async def _check(self, job: Job, manifest: bytes | None) -> Job | None:
        if manifest is None:
            return None  # delivered before manifests existed: nothing states what it counted
        delivered = manifest_totals(manifest)
        current = await self._repository.period_totals(job)
        if current == delivered:
            return None
        restatement = await self._repository.create_restatement(job)
        if restatement is not None:
            log.info(
                "delivered totals changed: export restated",
                extra={
                    "job_id": str(restatement.job_id),
                    "restatement_of": str(job.job_id),
                    "org_id": str(job.org_id),
                    "schedule_id": str(job.schedule_id),
                    "currencies": sorted(set(current) | set(delivered)),
                },
            )
        return restatement
