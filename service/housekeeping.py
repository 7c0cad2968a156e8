"""Periodic work the scheduler triggers: expiry, the sweep that leaves no job stuck and no upload
orphaned, and rollup retention."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from service.errors import QueueUnavailable, StorageError
from service.job import EXPORT_PREFIX, job_id_of, manifest_key, rfc3339
from service.metrics import ExportMetrics
from service.queue import JobQueue
from service.repository import JobRepository
from service.retention import RollupTable, prune_cutoff
from service.settings import Settings
from service.storage import ObjectStore, parse_s3_uri

log = logging.getLogger(__name__)
#: A published job still unclaimed after this long is published again. Long enough that a
#: backlog of queued jobs is not duplicated every sweep; short enough to notice a lost message.
UNCLAIMED_AFTER_SECONDS = 15 * 60
#: A pending job that has no message (never published, retried, handed back) is published after
#: this long; the API's own publish normally lands well within it.
UNPUBLISHED_AFTER_SECONDS = 5.0
#: Incomplete multipart uploads under the export prefix older than this are aborted unless a
#: pending or running job records them: no attempt lives longer than the actor's time limit
#: (20 minutes), so such an upload was started by a worker that died before recording it.
STALE_UPLOAD_SECONDS = 2 * 3600
#: Rollup retention: rows deleted per statement (one index range scan, about 10 ms when cached),
#: statements per table per tick, and the pause between two statements. A tick thus deletes at
#: most 200,000 rows per table and takes seconds; a larger backlog drains over the next ticks.
PRUNE_BATCH = 10_000
PRUNE_MAX_BATCHES = 20
PRUNE_PAUSE_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class SweepReport:
    requeued: int = 0
    failed: int = 0
    cleaned: int = 0
    published: int = 0
    aborted: int = 0
    cancelled: int = 0


class Housekeeper:
    def __init__(
        self,
        repository: JobRepository,
        store: ObjectStore,
        settings: Settings,
        metrics: ExportMetrics | None = None,
    ) -> None:
        self._metrics = metrics or ExportMetrics()
        self._repository = repository
        self._store = store
        self._settings = settings

    async def expire_due(self, batch: int = 500) -> int:
        """Delete the data file and manifest of succeeded jobs past ``expires_at`` and mark them
        ``expired``.

        The objects go first: a job is only marked expired once nothing is left in the bucket
        (deleting a missing key succeeds, so a repeat after a crash is harmless).
        """
        self._metrics.ticks.labels("expire").inc()
        expired = 0
        for job in await self._repository.due_for_expiry(batch):
            ctx = {"job_id": str(job.job_id), "org_id": str(job.org_id)}
            try:
                if job.output_uri:
                    bucket, key = parse_s3_uri(job.output_uri)
                    await self._store.delete(bucket, key)
                    await self._store.delete(bucket, manifest_key(job.org_id, job.job_id))
            except StorageError:
                log.exception("could not delete an expired export; will retry", extra=ctx)
                continue
            if await self._repository.expire(job.job_id) is not None:
                expired += 1
                log.info("export expired", extra=ctx)
        self._metrics.housekeeping.labels("expired").inc(expired)
        return expired

    async def prune_rollups(
        self,
        now: datetime | None = None,
        *,
        batch: int = PRUNE_BATCH,
        max_batches: int = PRUNE_MAX_BATCHES,
        pause: float = PRUNE_PAUSE_SECONDS,
    ) -> int:
        """With ROLLUP_PRUNE, delete the rollup rows of every table whose ``bucket_start`` is
        before the prune cutoff (the API's retention boundary as it was a day ago); return how many
        were deleted. Idempotency keys past their 24 hours are forgotten in any case.

        ``batch`` rows per statement, at most ``max_batches`` statements per table, ``pause``
        seconds between two statements, so one tick stays bounded; what is left (a backlog after a
        first deploy or a shortened DATA_RETENTION_MONTHS) goes on at the next tick.
        """
        self._metrics.ticks.labels("prune").inc()
        cutoff = prune_cutoff(now or datetime.now(UTC), self._settings.data_retention_months)
        counts: dict[str, int] = {}
        capped = False
        # The rollup tables are the platform's unless ROLLUP_PRUNE says this service owns them.
        for table in RollupTable if self._settings.rollup_prune else ():
            counts[table.value] = 0
            for n in range(max_batches):
                if n:
                    await asyncio.sleep(pause)
                deleted = await self._repository.prune_rollups(table, cutoff, batch)
                counts[table.value] += deleted
                if deleted < batch:
                    break
            else:
                capped = True  # the tick's share for this table is used up; the next tick goes on
        # Idempotency keys live 24 hours; past that they only take space (same batching).
        keys = 0
        for n in range(max_batches):
            if n:
                await asyncio.sleep(pause)
            forgotten = await self._repository.forget_idempotency_keys(batch)
            keys += forgotten
            if forgotten < batch:
                break
        total = sum(counts.values())
        if total:
            log.info(
                "pruned rollups",
                extra={"deleted": total, **counts, "cutoff": rfc3339(cutoff), "capped": capped},
            )
        self._metrics.housekeeping.labels("pruned_rows").inc(total)
        if keys:
            log.info("forgot expired idempotency keys", extra={"deleted": keys})
        return total

    async def sweep(
        self, queue: JobQueue, batch: int = 500, stale_upload_seconds: float = STALE_UPLOAD_SECONDS
    ) -> SweepReport:
        """Everything that keeps jobs moving and the buckets clean, in one idempotent pass:

        1. running jobs whose lease lapsed (their worker died): cancelled if a cancel was asked
           for, else back to pending, or failed once they used up EXPORT_MAX_ATTEMPTS;
        2. finished jobs whose upload could not be cleaned up at the time: abort it (and delete
           the key of a failed job);
        3. pending jobs without a message: publish them;
        4. incomplete uploads under the export prefix that nobody recorded (a worker killed
           between starting an upload and writing its id): abort them once they are old.
        """
        self._metrics.ticks.labels("sweep").inc()
        max_attempts = self._settings.export_max_attempts
        cancelled = await self._repository.cancel_lapsed(batch)
        requeued = await self._repository.requeue_lapsed(max_attempts, batch)
        failed = await self._repository.fail_lapsed(max_attempts, batch)
        for job_id in requeued:
            log.warning(
                "reclaimed a job whose worker stopped renewing its lease", extra={"job_id": str(job_id)}
            )
        for job in failed:
            log.error(
                "export failed",
                extra={"job_id": str(job.job_id), "org_id": str(job.org_id), "reason": job.error_message},
            )
        cleaned = await self._clean_leftovers(batch)
        published = await self._publish_stale(queue, batch)
        aborted = await self._abort_stale_uploads(stale_upload_seconds)
        report = SweepReport(len(requeued), len(failed), cleaned, published, aborted, len(cancelled))
        if report != SweepReport():
            log.info("sweep", extra=asdict(report))
        for action, count in asdict(report).items():
            self._metrics.housekeeping.labels(action).inc(count)
        # Jobs the sweep ended for good count with the ones attempts ended (the failure-rate alert)
        self._metrics.finished.labels("failed").inc(report.failed)
        self._metrics.finished.labels("cancelled").inc(report.cancelled)
        return report

    async def _clean_leftovers(self, batch: int) -> int:
        cleaned = 0
        for job in await self._repository.leftover_uploads(batch):
            assert job.upload_id is not None
            bucket = self._settings.bucket_for(job.org_id)
            try:
                await self._store.abort_upload(bucket, job.object_key, job.upload_id)
                if job.status.object_removed:
                    await self._store.delete(bucket, job.object_key)
                    await self._store.delete(bucket, job.manifest_key)
            except StorageError as exc:
                log.warning(
                    "could not clean up an upload; will retry",
                    extra={"job_id": str(job.job_id), "reason": str(exc)},
                )
                continue
            await self._repository.clear_upload_id(job.job_id, job.upload_id)
            cleaned += 1
        return cleaned

    async def _publish_stale(self, queue: JobQueue, batch: int) -> int:
        sent = 0
        for job_id in await self._repository.stale_pending(
            UNPUBLISHED_AFTER_SECONDS, UNCLAIMED_AFTER_SECONDS, batch
        ):
            try:
                await queue.enqueue_export(job_id)
            except QueueUnavailable:
                log.warning(
                    "broker unavailable; pending jobs wait for the next sweep", extra={"job_id": str(job_id)}
                )
                break
            await self._repository.mark_enqueued(job_id)
            sent += 1
        return sent

    async def _abort_stale_uploads(self, older_than: float) -> int:
        aborted = 0
        settings = self._settings
        for bucket in settings.buckets:
            try:
                stale = await self._store.stale_uploads(bucket, EXPORT_PREFIX, older_than)
                # The age is the server's word (moto, for one, reports a fixed date in 2010), and a
                # worker records its upload just after starting it: an upload under the key of a
                # job that is still pending or running is that job's to clean up, never an orphan.
                owners = {key: job_id_of(key) for key, _ in stale}
                unfinished = (
                    await self._repository.unfinished_job_ids(
                        [job_id for job_id in owners.values() if job_id is not None]
                    )
                    if stale
                    else set()
                )
                for key, upload_id in stale:
                    if owners[key] in unfinished:
                        continue
                    await self._store.abort_upload(bucket, key, upload_id)
                    log.warning("aborted an orphaned upload", extra={"bucket": bucket, "key": key})
                    aborted += 1
            except StorageError as exc:
                log.warning(
                    "could not list or abort stale uploads", extra={"bucket": bucket, "reason": str(exc)}
                )
        return aborted
