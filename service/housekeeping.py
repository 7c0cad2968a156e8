"""Periodic work the scheduler triggers: expire old exports, re-enqueue jobs whose message was lost."""

from __future__ import annotations

import logging

from service.errors import QueueUnavailable, StorageError
from service.queue import JobQueue
from service.repository import JobRepository
from service.storage import ObjectStore, parse_s3_uri

log = logging.getLogger(__name__)
#: A published job still unclaimed after this long is published again. Long enough that a
#: backlog of queued jobs is not duplicated every sweep; short enough to notice a lost message.
UNCLAIMED_AFTER_SECONDS = 15 * 60


class Housekeeper:
    def __init__(self, repository: JobRepository, store: ObjectStore) -> None:
        self._repository = repository
        self._store = store

    async def expire_due(self, batch: int = 500) -> int:
        """Delete the objects of succeeded jobs past ``expires_at`` and mark them ``expired``.

        The object goes first: a job is only marked expired once nothing is left in the bucket
        (deleting a missing key succeeds, so a repeat after a crash is harmless).
        """
        expired = 0
        for job in await self._repository.due_for_expiry(batch):
            ctx = {"job_id": str(job.job_id), "org_id": str(job.org_id)}
            try:
                if job.output_uri:
                    await self._store.delete(*parse_s3_uri(job.output_uri))
            except StorageError:
                log.exception("could not delete an expired export; will retry", extra=ctx)
                continue
            if await self._repository.expire(job.job_id) is not None:
                expired += 1
                log.info("export expired", extra=ctx)
        return expired

    async def requeue_stale(self, queue: JobQueue, unpublished_after: float, batch: int = 500) -> int:
        """Publish pending jobs whose message never reached the broker (older than
        ``unpublished_after`` seconds), and re-publish those published but unclaimed for
        :data:`UNCLAIMED_AFTER_SECONDS` (a message lost with a broker's disk).

        A duplicate is harmless: the claim is compare-and-set, so only one message runs the job.
        """
        sent = 0
        for job_id in await self._repository.stale_pending(unpublished_after, UNCLAIMED_AFTER_SECONDS, batch):
            try:
                await queue.enqueue_export(job_id)
            except QueueUnavailable:
                log.warning("broker unavailable; stale jobs stay pending", extra={"job_id": str(job_id)})
                break
            await self._repository.mark_enqueued(job_id)
            sent += 1
        if sent:
            log.info("re-enqueued stale pending exports", extra={"count": sent})
        return sent
