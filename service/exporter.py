"""The worker's use case: turn one pending job into exactly one checksummed CSV object in S3."""

from __future__ import annotations

import asyncio
import logging
import uuid

from service.errors import ExportFailed
from service.job import ExportOutput, Job, object_key
from service.repository import JobRepository
from service.settings import Settings
from service.storage import MultipartUpload, ObjectStore, s3_uri

log = logging.getLogger(__name__)


def content_disposition(job: Job) -> str:
    name = (
        f"analytics-export-{job.granularity.value}-{job.time_range_start:%Y%m%d}-"
        f"{job.time_range_end:%Y%m%d}-{job.job_id}.csv"
    )
    return f'attachment; filename="{name}"'


def describe(exc: BaseException) -> str:
    """A readable one-line reason for error_message."""
    if isinstance(exc, ExportFailed):
        return str(exc)
    if isinstance(exc, asyncio.CancelledError):
        return "export interrupted (time limit or worker shutdown)"
    return f"internal error: {type(exc).__name__}: {exc}"


class Exporter:
    def __init__(self, repository: JobRepository, store: ObjectStore, settings: Settings) -> None:
        self._repository = repository
        self._store = store
        self._settings = settings

    async def run(self, job_id: uuid.UUID) -> Job | None:
        """Claim and export the job; ``None`` if it was not pending (a duplicate or late message)."""
        job = await self._repository.claim(job_id)
        if job is None:
            log.info("export not pending, nothing to do", extra={"job_id": str(job_id)})
            return None
        ctx = {"job_id": str(job.job_id), "org_id": str(job.org_id), "attempt": job.attempt}
        log.info("export started", extra={**ctx, "granularity": job.granularity.value})
        bucket = self._settings.bucket_for(job.org_id)
        key = object_key(job.org_id, job.job_id)
        upload: MultipartUpload | None = None
        try:
            upload = await self._store.start_upload(bucket, key, content_disposition(job))
            await self._repository.set_upload_id(job, upload.upload_id)
            row_count = await self._repository.copy_rows(job, upload.write)
            result = await upload.complete(
                {"job-id": str(job.job_id), "org-id": str(job.org_id), "row-count": str(row_count)},
                content_disposition(job),
            )
            output = ExportOutput(s3_uri(bucket, key), result.checksum, row_count, result.byte_count)
            done = await self._repository.complete(job, output, self._settings.export_signed_url_ttl)
        except BaseException as exc:
            # BaseException too: a time limit or shutdown cancels the coroutine, and the job must
            # still end truthfully with no upload left behind. Cancellation is then re-raised;
            # an ordinary failure is an outcome (the job is failed), not an error of the actor.
            await self._clean_up(job, upload, ctx)
            failed = await self._record_failure(job, exc, ctx)
            if not isinstance(exc, Exception):
                raise
            return failed
        if done is None:
            # Another attempt owns the job now (it was reclaimed): its object is the one that counts.
            log.warning("export finished but the job moved on; result discarded", extra=ctx)
            return None
        log.info(
            "export succeeded",
            extra={**ctx, "rows": row_count, "bytes": result.byte_count, "parts": result.parts},
        )
        return done

    async def _clean_up(self, job: Job, upload: MultipartUpload | None, ctx: dict[str, object]) -> None:
        """Leave nothing behind: abort an unfinished upload, delete an object no job will point at."""
        if upload is None:
            return
        try:
            if upload.completed:
                await self._store.delete(upload.bucket, upload.key)
            else:
                await upload.abort()
        except Exception:
            log.exception("could not clean up the upload", extra={**ctx, "upload_id": upload.upload_id})

    async def _record_failure(self, job: Job, exc: BaseException, ctx: dict[str, object]) -> Job | None:
        reason = describe(exc)
        log.error(
            "export failed", extra={**ctx, "reason": reason}, exc_info=not isinstance(exc, ExportFailed)
        )
        try:
            return await self._repository.fail(job, reason)
        except Exception:
            log.exception("could not record the failure", extra=ctx)
            return None
