"""The worker's use case: turn one pending job into exactly one checksummed data file in S3 and
its manifest.

An attempt claims the job with a lease and renews it while it streams. It writes the data file,
then the manifest (its facts, and the totals counted from the streamed rows) as its last write to
S3, then records both on the job. Whatever happens, the attempt ends the job truthfully:
``succeeded`` only after the manifest is stored and the row recorded the checksums; back to
``pending`` (retry with backoff, or handed back at shutdown); or ``failed`` with a readable reason.
Its upload is aborted (or its objects deleted) on every path that does not succeed. A later
attempt restarts from scratch under the same keys; it never resumes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from service.errors import ExportCancelled, ExportFailed, LeaseLost, Retryable
from service.formats import COLUMNS, CONTENT_TYPES, Gzip, parquet_schema
from service.job import ExportFormat, ExportOutput, Job, Lease
from service.logs import log_context
from service.manifest import MANIFEST_CONTENT_TYPE, FileFacts, build_manifest, checksum
from service.metrics import ExportMetrics
from service.repository import JobRepository
from service.settings import Settings
from service.storage import MultipartUpload, ObjectStore, s3_uri
from service.tally import ParquetOutput, Tally, TallyError

log = logging.getLogger(__name__)
#: Retry backoff doubles from one scheduler interval and stops growing here.
MAX_BACKOFF_SECONDS = 600.0


def content_disposition(job: Job) -> str:
    name = (
        f"analytics-export-{job.granularity.value}-{job.time_range_start:%Y%m%d}-"
        f"{job.time_range_end:%Y%m%d}-{job.job_id}.{job.output_format.extension}"
    )
    return f'attachment; filename="{name}"'


def describe(exc: BaseException) -> str:
    """A readable one-line reason for error_message."""
    if isinstance(exc, ExportFailed):
        return str(exc)
    if isinstance(exc, asyncio.CancelledError):
        return "export interrupted (time limit exceeded)"
    if isinstance(exc, Retryable):
        return str(exc)
    if isinstance(exc, TimeoutError | ConnectionError):
        return f"network error: {type(exc).__name__}: {exc}"
    return f"internal error: {type(exc).__name__}: {exc}"


def is_retryable(exc: BaseException) -> bool:
    """Faults that may pass: dropped connections, timeouts, 5xx, and being cut off by the time limit."""
    return isinstance(exc, Retryable | TimeoutError | ConnectionError | asyncio.CancelledError)


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class _Attempt:
    job: Job
    ctx: dict[str, object]
    upload: MultipartUpload | None = None
    tally: Tally | None = None
    #: Set by the heartbeat (or a check at a part boundary): the job moved on / a cancel arrived.
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    def raise_if_stopped(self) -> None:
        if self.lost.is_set():
            raise LeaseLost("the lease lapsed while streaming")
        if self.cancel.is_set():
            raise ExportCancelled("cancelled on request")


class Exporter:
    def __init__(
        self,
        repository: JobRepository,
        store: ObjectStore,
        settings: Settings,
        worker_name: str | None = None,
        metrics: ExportMetrics | None = None,
    ) -> None:
        self._repository = repository
        self._store = store
        self._settings = settings
        self._worker_name = worker_name or default_worker_name()
        self._metrics = metrics or ExportMetrics()
        self._draining = False

    def start_draining(self) -> None:
        """From now on a cancelled export is handed back (not charged as an attempt)."""
        self._draining = True

    async def run(self, job_id: uuid.UUID) -> Job | None:
        """Claim and export the job. ``None`` if it was not claimable (a duplicate or early message)
        or the attempt lost its lease; otherwise the job as this attempt left it."""
        job = await self._repository.claim(job_id, self._settings.export_lease_ttl, self._worker_name)
        if job is None:
            log.info("export not claimable, nothing to do", extra={"job_id": str(job_id)})
            return None
        attempt = _Attempt(
            job, {"job_id": str(job.job_id), "org_id": str(job.org_id), "attempt": job.attempt}
        )
        # Every line of the attempt (storage retries included) carries the job and the request
        # that created it.
        with log_context(**attempt.ctx, request_id=job.request_id):
            return await self._attempt(attempt)

    async def _attempt(self, attempt: _Attempt) -> Job | None:
        log.info("export started", extra={**attempt.ctx, "granularity": attempt.job.granularity.value})
        started = time.monotonic()
        self._metrics.running.inc()
        heartbeat = asyncio.create_task(self._heartbeat(attempt))
        outcome = "lost"
        try:
            done = await self._export(attempt)
            if done is not None:
                outcome = "succeeded"
                self._metrics.rows.inc(done.row_count or 0)
                self._metrics.bytes.inc(done.byte_count or 0)
            return done
        except BaseException as exc:
            # BaseException too: a time limit or shutdown cancels the coroutine, and the job must
            # still end truthfully with nothing left behind. Cancellation is re-raised afterwards.
            heartbeat.cancel()  # settling moves the job on; its lease needs no more renewing
            settled, outcome = await self._settle(attempt, exc)
            if not isinstance(exc, Exception):
                raise
            return settled
        finally:
            heartbeat.cancel()
            self._metrics.running.dec()
            self._count(outcome, time.monotonic() - started)

    def _count(self, outcome: str, seconds: float) -> None:
        """One attempt ended: its outcome, its duration and, if final, the job's status."""
        self._metrics.attempts.labels(outcome).inc()
        self._metrics.duration.labels(outcome).observe(seconds)
        if outcome in ("succeeded", "failed", "cancelled"):
            self._metrics.finished.labels(outcome).inc()

    async def _export(self, attempt: _Attempt) -> Job | None:
        job, ctx = attempt.job, attempt.ctx
        bucket = self._settings.bucket_for(job.org_id)
        key = job.object_key
        if job.upload_id:
            # Restart, don't resume: the previous attempt's upload goes, and we stream from the start.
            await self._store.abort_upload(bucket, key, job.upload_id)
            log.info("aborted the previous attempt's upload", extra={**ctx, "upload_id": job.upload_id})

        async def record(upload_id: str) -> None:
            # Before any byte goes to S3: a later attempt aborts this id, which fences us off.
            if not await self._repository.set_upload_id(job, upload_id):
                raise LeaseLost("the job moved on before the upload started")

        # Created in S3 with the first full part, or at the end with its checksum if it fits in one.
        content_type = CONTENT_TYPES[job.output_format]
        upload = attempt.upload = self._store.open_upload(
            bucket, key, content_disposition(job), record, content_type
        )

        async def store(data: bytes) -> None:
            """Bytes of the file, in order, to the upload."""
            attempt.raise_if_stopped()
            sent = upload.parts_sent
            await upload.write(data)
            if upload.parts_sent != sent:
                # A part went out: a cancel or a lost lease stops us here, at the part boundary.
                await self._check_lease(attempt)
                attempt.raise_if_stopped()

        # Every format starts from COPY's CSV; the tally reads it all (and writes the Parquet).
        parquet = (
            ParquetOutput(parquet_schema(job.output_schema, job.time_zone), store)
            if job.output_format is ExportFormat.PARQUET
            else None
        )
        tally = attempt.tally = Tally(COLUMNS[job.output_schema], parquet=parquet)
        gzip = Gzip() if job.output_format is ExportFormat.CSV_GZ else None

        async def sink(chunk: bytes) -> None:
            await tally.feed(chunk)
            if gzip is not None:
                await store(gzip.compress(chunk))
            elif parquet is None:
                await store(chunk)
            else:
                attempt.raise_if_stopped()

        names = (self._settings.focus_provider_name, self._settings.focus_service_name)
        row_count = await self._repository.copy_rows(job, sink, names)
        attempt.raise_if_stopped()
        if gzip is not None:
            await store(gzip.flush())
        totals = await tally.finish()
        if totals.rows != row_count:
            raise TallyError(f"the tally counted {totals.rows} rows where COPY sent {row_count}")
        result = await upload.complete(
            {"job-id": str(job.job_id), "org-id": str(job.org_id), "row-count": str(row_count)}
        )
        data = FileFacts(key, row_count, result.byte_count, result.checksum, content_type)
        if gzip is not None:
            data = replace(
                data,
                content_encoding="gzip",
                uncompressed_bytes=gzip.content_bytes,
                uncompressed_sha256=gzip.content_sha256,
            )
        manifest = build_manifest(job, [data], totals, datetime.now(UTC))
        # The manifest is the commit point: written only while this attempt still holds the job.
        await self._check_lease(attempt)
        attempt.raise_if_stopped()
        await self._store.put(bucket, job.manifest_key, manifest, MANIFEST_CONTENT_TYPE)
        output = ExportOutput(
            s3_uri(bucket, key), result.checksum, row_count, result.byte_count, manifest, checksum(manifest)
        )
        done = await self._repository.complete(job, output, self._settings.export_signed_url_ttl)
        if done is None:
            # Another attempt owns the job now; it writes the same key, so our object is not ours
            # to delete.
            log.warning("export finished but the job moved on; result discarded", extra=ctx)
            return None
        log.info(
            "export succeeded",
            extra={**ctx, "rows": row_count, "bytes": result.byte_count, "parts": result.parts},
        )
        return done

    async def _heartbeat(self, attempt: _Attempt) -> None:
        while not (attempt.lost.is_set() or attempt.cancel.is_set()):
            await asyncio.sleep(self._settings.export_lease_ttl / 3)
            await self._check_lease(attempt)

    async def _check_lease(self, attempt: _Attempt) -> None:
        """Renew the lease, and learn whether the attempt lost its job or is asked to cancel."""
        try:
            lease = await self._repository.renew_lease(attempt.job, self._settings.export_lease_ttl)
        except Exception as exc:
            # Keep going: if the database stays away past the lease, the sweep reclaims the job
            # and every write of this attempt is fenced off.
            log.warning("could not renew the lease", extra={**attempt.ctx, "reason": str(exc)})
            return
        if lease is Lease.LOST:
            log.warning("lease lost: the job moved on", extra=attempt.ctx)
            attempt.lost.set()
        elif lease is Lease.CANCEL_REQUESTED:
            log.info("cancel requested; stopping at the next part", extra=attempt.ctx)
            attempt.cancel.set()

    async def _settle(self, attempt: _Attempt, exc: BaseException) -> tuple[Job | None, str]:
        """Record how the attempt ended (compare-and-set), then clean up its upload. Returns the
        job as settled (``None`` if the attempt no longer owned it) and the outcome for the
        metrics: failed, retrying, cancelled, handed_back or lost."""
        job, ctx, upload = attempt.job, attempt.ctx, attempt.upload
        if attempt.tally is not None:
            await attempt.tally.abandon()  # first: its thread may still be writing (Parquet)
        if upload is not None:
            await upload.discard()  # no part upload may outlive the attempt
        if isinstance(exc, LeaseLost):
            log.warning("attempt lost its job; stopping", extra={**ctx, "reason": str(exc)})
            await self._abort(upload, ctx)
            return None, "lost"
        reason = describe(exc)
        try:
            if isinstance(exc, ExportCancelled):
                settled, outcome, said = await self._repository.cancel_running(job), "cancelled", "cancelled"
            elif isinstance(exc, asyncio.CancelledError) and self._draining:
                settled, outcome, said = await self._repository.hand_back(job), "handed_back", "handed back"
            elif is_retryable(exc) and job.charged_attempts < self._settings.export_max_attempts:
                backoff = min(
                    self._settings.export_worker_interval * 2 ** (job.charged_attempts - 1),
                    MAX_BACKOFF_SECONDS,
                )
                settled = await self._repository.retry(
                    job, f"attempt {job.attempt} failed: {reason}", backoff
                )
                outcome, said = "retrying", f"retrying in {backoff:g}s"
            else:
                if is_retryable(exc):
                    reason = f"gave up after {job.charged_attempts} attempts: {reason}"
                settled, outcome, said = await self._repository.fail(job, reason), "failed", "failed"
        except Exception:
            # The database is away too: the lease will lapse and the sweep will reclaim the job.
            log.exception("could not record how the attempt ended", extra={**ctx, "reason": reason})
            await self._abort(upload, ctx)
            return None, "lost"
        log.log(
            logging.ERROR if outcome == "failed" else logging.WARNING,
            f"export {said}",
            extra={**ctx, "reason": reason},
            exc_info=not (is_retryable(exc) or isinstance(exc, ExportFailed | ExportCancelled)),
        )
        if settled is None:
            await self._abort(upload, ctx)  # fenced: only our own upload is ours to clean
            return None, "lost"
        if await self._clean(settled, upload, ctx) and upload is not None and upload.upload_id:
            await self._repository.clear_upload_id(job.job_id, upload.upload_id)
            settled = replace(settled, upload_id=None)
        return settled, outcome

    async def _clean(self, job: Job, upload: MultipartUpload | None, ctx: dict[str, object]) -> bool:
        """After this attempt settled the job (so nobody else writes its keys right now): abort
        the upload, and delete the data file and the manifest if our upload completed or the job
        ended failed or cancelled (an earlier attempt's objects may sit there). ``False`` leaves
        the rest to the sweep (finished jobs) or to the next attempt, which aborts the recorded
        upload and overwrites the keys."""
        bucket = self._settings.bucket_for(job.org_id)
        try:
            if upload is not None and upload.upload_id and not upload.completed:
                await self._store.abort_upload(upload.bucket, upload.key, upload.upload_id)
            if (upload is not None and upload.completed) or job.status.object_removed:
                await self._store.delete(bucket, job.object_key)
                await self._store.delete(bucket, job.manifest_key)
        except Exception as exc:
            log.warning("could not clean up the upload; the sweep will", extra={**ctx, "reason": str(exc)})
            return False
        return True

    async def _abort(self, upload: MultipartUpload | None, ctx: dict[str, object]) -> None:
        if upload is None or upload.upload_id is None or upload.completed:
            return  # nothing in S3 yet, or an object (not ours to delete here)
        try:
            await self._store.abort_upload(upload.bucket, upload.key, upload.upload_id)
        except Exception as exc:
            log.warning("could not abort the upload; the sweep will", extra={**ctx, "reason": str(exc)})
