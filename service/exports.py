"""The API's use cases: create, read, list and download exports."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import orjson

from service.errors import (
    Conflict,
    DatabaseUnavailable,
    ExportsError,
    Gone,
    NotFound,
    QueueUnavailable,
    RollupTablesUnfit,
)
from service.job import (
    Caller,
    Created,
    EventPage,
    ExportRequest,
    IdempotencyKey,
    Job,
    JobBacklog,
    JobPage,
    JobStatus,
    rfc3339,
)
from service.metrics import Backlog
from service.queue import JobQueue, hand_over
from service.repository import JobRepository
from service.storage import ObjectStore, parse_s3_uri

log = logging.getLogger(__name__)
#: How long a readiness check waits for one dependency.
CHECK_SECONDS: Final = 3.0
#: Links issued to the same caller (subject, address, user agent) within this long of the first
#: are counted in that first download_url_issued event instead of adding one each.
DOWNLOAD_EVENT_WINDOW_SECONDS: Final = 15 * 60


@dataclass(frozen=True, slots=True)
class Download:
    url: str
    expires_at: datetime


def request_fingerprint(request: ExportRequest) -> str:
    """SHA-256 of the normalised request: what an Idempotency-Key is bound to."""
    canonical = orjson.dumps(
        {
            "org": str(request.org_id),
            "start": request.start.isoformat(),
            "end": request.end.isoformat(),
            "granularity": request.granularity.value,
            "models": list(request.models) if request.models else None,
            # Only when not UTC: keys used before time zones existed keep their fingerprints.
            **({"timeZone": request.time_zone} if request.time_zone != "UTC" else {}),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


class ExportService:
    def __init__(
        self,
        repository: JobRepository,
        store: ObjectStore,
        queue: JobQueue,
        *,
        max_active_per_org: int | None = None,
    ) -> None:
        self._repository = repository
        self._store = store
        self._queue = queue
        self._max_active = max_active_per_org

    async def create(
        self, request: ExportRequest, caller: Caller | None = None, idempotency_key: str | None = None
    ) -> Created:
        """Store the job, then enqueue it. The row is the source of truth: if the broker is down
        the job is still accepted and the scheduler's sweep enqueues it later. A replayed
        Idempotency-Key returns the job it created, without a second job or message."""
        key = IdempotencyKey(idempotency_key, request_fingerprint(request)) if idempotency_key else None
        created = await self._repository.create(request, caller, idempotency=key, max_active=self._max_active)
        job = created.job
        ctx = {"job_id": str(job.job_id), "org_id": str(job.org_id)}
        if not created.new:
            log.info("idempotent replay: returning the existing export", extra=ctx)
            return created
        if await hand_over(self._queue, self._repository.mark_enqueued, job.job_id, "export", ctx):
            log.info("export enqueued", extra={**ctx, "granularity": job.granularity.value})
        return created

    async def backlog(self) -> Backlog:
        """What /metrics reports about waiting work: jobs from the database, messages from the
        broker; a source that does not answer is ``None`` (the scrape itself still succeeds)."""
        jobs: JobBacklog | None
        queues: dict[str, int] | None
        try:
            jobs = await self._repository.backlog()
        except DatabaseUnavailable as exc:
            log.warning("backlog: database unavailable", extra={"reason": str(exc)})
            jobs = None
        try:
            queues = await self._queue.depths()
        except QueueUnavailable as exc:
            log.warning("backlog: broker unavailable", extra={"reason": str(exc)})
            queues = None
        return Backlog(jobs, queues)

    async def dependencies(self, buckets: Sequence[str]) -> dict[str, str | None]:
        """Whether the database (``database``), the broker (``broker``) and each bucket
        (``bucket:<name>``) answer now, and the rollup tables serve exports (``rollups``):
        ``None`` for yes, else why not."""
        return await _checked(
            {
                "database": self._repository.ping(),
                "rollups": self._rollup_tables(),
                "broker": self._queue.ping(),
                **{f"bucket:{bucket}": self._store.check_bucket(bucket) for bucket in buckets},
            }
        )

    async def _rollup_tables(self) -> None:
        found = await self._repository.rollup_problems()
        if found:
            raise RollupTablesUnfit("; ".join(found))

    async def scrape(self, buckets: Sequence[str]) -> tuple[Backlog, dict[str, str | None]]:
        """What /metrics reports: the backlog, and whether each dependency answered. The backlog's
        reads of the database and the broker say whether those answered; only the buckets need a
        check of their own."""
        backlog = await self.backlog()
        report: dict[str, str | None] = {
            "database": None if backlog.jobs is not None else "the backlog could not be read",
            "broker": None if backlog.queues is not None else "the queue depths could not be read",
        }
        report |= await _checked({f"bucket:{bucket}": self._store.check_bucket(bucket) for bucket in buckets})
        return backlog, report

    async def get(self, org_id: uuid.UUID, job_id: uuid.UUID) -> Job:
        job = await self._repository.get(org_id, job_id)
        if job is None:
            raise NotFound(f"export {job_id} not found")
        return job

    async def list_page(
        self,
        org_id: uuid.UUID,
        *,
        status: JobStatus | None,
        limit: int,
        cursor: str | None,
        schedule_id: uuid.UUID | None = None,
    ) -> JobPage:
        return await self._repository.list_page(
            org_id, status=status, limit=limit, cursor=cursor, schedule_id=schedule_id
        )

    async def cancel(self, org_id: uuid.UUID, job_id: uuid.UUID, caller: Caller) -> Job:
        """A pending job is cancelled at once; a running one is asked to stop at its next part
        (it then aborts its upload and becomes ``cancelled``). A finished job is a 409."""
        job = await self._repository.cancel(org_id, job_id, caller)
        if job is None:
            current = await self.get(org_id, job_id)  # 404 for an unknown job or another org's
            raise Conflict(
                f"export {job_id} is already {current.status.value}; "
                "only a pending or running export can be cancelled"
            )
        log.info(
            "export cancel requested",
            extra={"job_id": str(job_id), "org_id": str(org_id), "status": job.status.value},
        )
        return job

    async def events(
        self, org_id: uuid.UUID, job_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> EventPage:
        await self.get(org_id, job_id)  # 404 for an unknown job or another org's
        return await self._repository.events(org_id, job_id, limit=limit, cursor=cursor)

    async def manifest(self, org_id: uuid.UUID, job_id: uuid.UUID) -> bytes:
        """The manifest a succeeded export wrote, byte for byte as stored beside its file."""
        found = await self._repository.get_manifest(org_id, job_id)
        if found is None:
            raise NotFound(f"export {job_id} not found")
        job, manifest = found
        if job.status is not JobStatus.SUCCEEDED:
            raise Conflict(f"export {job_id} is {job.status.value}; only a succeeded export has a manifest")
        if manifest is None:
            raise Conflict(f"export {job_id} succeeded before exports had manifests; request a new export")
        return manifest

    async def download(self, org_id: uuid.UUID, job_id: uuid.UUID, caller: Caller | None = None) -> Download:
        """A presigned GET URL valid exactly until the job expires: minted per request, never
        stored, and recorded in the job's audit trail (who, when, from where)."""
        job = await self.get(org_id, job_id)
        if job.status is JobStatus.EXPIRED:
            raise Gone(f"export {job_id} expired and its file was deleted; request a new export")
        if job.status is not JobStatus.SUCCEEDED:
            raise Conflict(
                f"export {job_id} is {job.status.value}; only a succeeded export can be downloaded"
            )
        assert job.expires_at is not None
        assert job.output_uri is not None
        remaining = (job.expires_at - datetime.now(UTC)).total_seconds()
        if remaining < 1:
            # Past its expiry but not yet swept: as far as the client is concerned it is gone.
            raise Gone(f"export {job_id} expired at {rfc3339(job.expires_at)}; request a new export")
        url = await self._store.presign_download(*parse_s3_uri(job.output_uri), expires_in=remaining)
        if caller is not None:
            await self._repository.record_download(
                job, caller, int(remaining), window_seconds=DOWNLOAD_EVENT_WINDOW_SECONDS
            )
        return Download(url=url, expires_at=job.expires_at)


async def _checked(checks: Mapping[str, Awaitable[object]]) -> dict[str, str | None]:
    """Run the checks at once, each within CHECK_SECONDS: ``None`` for each that passed, else why not."""
    results = await asyncio.gather(
        *(asyncio.wait_for(check, CHECK_SECONDS) for check in checks.values()), return_exceptions=True
    )
    report: dict[str, str | None] = {}
    for name, result in zip(checks, results, strict=True):
        if isinstance(result, ExportsError | TimeoutError | OSError):
            report[name] = str(result) or type(result).__name__
        elif isinstance(result, BaseException):
            raise result
        else:
            report[name] = None
    return report
