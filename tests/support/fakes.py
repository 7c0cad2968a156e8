"""Fakes of the ports (S3 client, job repository, queue), job factories and a tiny JSON Schema check.

Nothing here talks to a network, a database or S3: each fake keeps its state in memory and
records the calls it received, so tests can assert on what the code under test asked for.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from botocore.exceptions import ClientError

from service.api.contract import validator
from service.api.schemas import SCHEMAS
from service.errors import IdempotencyKeyReused, QueueUnavailable
from service.job import (
    Caller,
    Created,
    Event,
    EventPage,
    ExportOutput,
    ExportRequest,
    Granularity,
    IdempotencyKey,
    Job,
    JobBacklog,
    JobPage,
    JobStatus,
    Lease,
)
from service.repository import decode_cursor, decode_event_cursor, encode_cursor, encode_event_cursor
from service.retention import RollupTable
from tests.support.rollups import HEADER

ORG_A = uuid.UUID("0b6f3c2e-8f57-4a4e-9d1c-3a1f4f0e9a01")
ORG_B = uuid.UUID("5d2a9e77-1c4b-4f0a-8b6e-7e3c2d1f0b02")
SECRET = "unit-test-signing-secret-long-enough-for-hs256-and-for-hs512-too!!"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def make_job(**changes: Any) -> Job:
    """A pending daily job of ORG_A over the first week of November 2026, with ``changes`` applied."""
    job = Job(
        job_id=uuid.uuid4(),
        org_id=ORG_A,
        requested_by="alice@example.com",
        time_range_start=T0,
        time_range_end=T0 + timedelta(days=7),
        granularity=Granularity.DAILY,
        models=None,
        status=JobStatus.PENDING,
        output_uri=None,
        checksum=None,
        row_count=None,
        byte_count=None,
        initiated_at=datetime(2026, 11, 8, 9, 30, tzinfo=UTC),
        started_at=None,
        completed_at=None,
        expires_at=None,
        error_message=None,
        attempt=0,
        upload_id=None,
        enqueued_at=None,
        lease_expires_at=None,
        claimed_by=None,
        handbacks=0,
        available_at=None,
        cancel_requested_at=None,
        request_id=None,
    )
    return replace(job, **changes)


def succeeded_job(*, expires_in: timedelta = timedelta(hours=12), **changes: Any) -> Job:
    """A succeeded job whose download window closes ``expires_in`` from now."""
    now = datetime.now(UTC)
    job_id = changes.pop("job_id", uuid.uuid4())
    org_id = changes.pop("org_id", ORG_A)
    job = make_job(
        job_id=job_id,
        org_id=org_id,
        status=JobStatus.SUCCEEDED,
        output_uri=f"s3://analytics-exports/analytics/exports/{org_id}/{job_id}.csv",
        checksum="ab" * 32,
        row_count=3,
        byte_count=120,
        started_at=now - timedelta(minutes=2),
        completed_at=now - timedelta(minutes=1),
        expires_at=now + expires_in,
        attempt=1,
    )
    return replace(job, **changes)


def client_error(code: str, status: int, operation: str = "UploadPart", message: str = "") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


# --- S3 -----------------------------------------------------------------------------------------


class FakeS3:
    """An in-memory S3 client implementing the ``S3Client`` protocol.

    ``errors`` maps a method name to an exception raised (every time) when that method is called.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploads: dict[str, dict[str, Any]] = {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.errors: dict[str, BaseException] = {}
        self._next_upload = 0

    def _record(self, method: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((method, kwargs))
        if method in self.errors:
            raise self.errors[method]

    def called(self, method: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == method]

    async def create_multipart_upload(self, **kwargs: Any) -> Mapping[str, object]:
        self._record("create_multipart_upload", kwargs)
        self._next_upload += 1
        upload_id = f"upload-{self._next_upload}"
        self.uploads[upload_id] = {
            "Initiated": datetime.now(UTC),
            "Bucket": kwargs["Bucket"],
            "Key": kwargs["Key"],
            "ContentType": kwargs.get("ContentType"),
            "ContentDisposition": kwargs.get("ContentDisposition"),
            "Metadata": dict(kwargs.get("Metadata", {})),
            "Tags": dict(parse_qsl(kwargs.get("Tagging", ""))),
            "parts": {},
        }
        return {"UploadId": upload_id, "Bucket": kwargs["Bucket"], "Key": kwargs["Key"]}

    async def upload_part(self, **kwargs: Any) -> Mapping[str, object]:
        self._record("upload_part", kwargs)
        upload = self.uploads[kwargs["UploadId"]]
        assert (upload["Bucket"], upload["Key"]) == (kwargs["Bucket"], kwargs["Key"])
        etag = f'"etag-{kwargs["UploadId"]}-{kwargs["PartNumber"]}"'
        upload["parts"][kwargs["PartNumber"]] = (etag, bytes(kwargs["Body"]))
        return {"ETag": etag}

    async def complete_multipart_upload(self, **kwargs: Any) -> Mapping[str, object]:
        self._record("complete_multipart_upload", kwargs)
        upload = self.uploads.pop(kwargs["UploadId"])
        listed = kwargs["MultipartUpload"]["Parts"]
        numbers = [part["PartNumber"] for part in listed]
        # S3's rules: parts listed in ascending order, each with the ETag it was given.
        assert numbers == sorted(upload["parts"]), (numbers, sorted(upload["parts"]))
        for part in listed:
            assert part["ETag"] == upload["parts"][part["PartNumber"]][0]
        body = b"".join(upload["parts"][n][1] for n in numbers)
        self.objects[(kwargs["Bucket"], kwargs["Key"])] = {
            "ETag": f'"multipart-{kwargs["UploadId"]}"',
            "Body": body,
            "Metadata": upload["Metadata"],  # as given at creation
            "Tags": upload["Tags"],
            "ContentType": upload["ContentType"],
            "ContentDisposition": upload["ContentDisposition"],
        }
        return {"ETag": f'"multipart-{kwargs["UploadId"]}"'}

    async def abort_multipart_upload(self, **kwargs: Any) -> Mapping[str, object]:
        self._record("abort_multipart_upload", kwargs)
        if self.uploads.pop(kwargs["UploadId"], None) is None:
            raise client_error("NoSuchUpload", 404, "AbortMultipartUpload")
        return {}

    async def put_object_tagging(self, **kwargs: Any) -> Mapping[str, object]:
        self._record("put_object_tagging", kwargs)
        stored = self.objects.get((kwargs["Bucket"], kwargs["Key"]))
        if stored is None:
            raise client_error("NoSuchKey", 404, "PutObjectTagging")
        stored["Tags"] = {tag["Key"]: tag["Value"] for tag in kwargs["Tagging"]["TagSet"]}
        return {}

    async def put_object(self, **kwargs: Any) -> Mapping[str, object]:
        self._record("put_object", kwargs)
        self.objects[(kwargs["Bucket"], kwargs["Key"])] = {
            "ETag": f'"put-{len(self.calls)}"',
            "Body": bytes(kwargs["Body"]),
            "Metadata": dict(kwargs.get("Metadata", {})),
            "Tags": {},
            "ContentType": kwargs.get("ContentType"),
            "ContentDisposition": kwargs.get("ContentDisposition"),
        }
        return {}

    async def delete_object(self, **kwargs: Any) -> Mapping[str, object]:
        self._record("delete_object", kwargs)
        self.objects.pop((kwargs["Bucket"], kwargs["Key"]), None)
        return {}

    async def head_bucket(self, **kwargs: Any) -> Mapping[str, object]:
        self._record("head_bucket", kwargs)
        return {}

    async def list_multipart_uploads(self, **kwargs: Any) -> Mapping[str, object]:
        self._record("list_multipart_uploads", kwargs)
        uploads = [
            {"Key": u["Key"], "UploadId": upload_id, "Initiated": u["Initiated"]}
            for upload_id, u in sorted(self.uploads.items())
            if u["Bucket"] == kwargs["Bucket"] and u["Key"].startswith(kwargs.get("Prefix", ""))
        ]
        return {"Uploads": uploads, "IsTruncated": False}

    async def create_bucket(self, **kwargs: Any) -> Mapping[str, object]:
        self._record("create_bucket", kwargs)
        return {}

    async def generate_presigned_url(
        self, ClientMethod: str, Params: Mapping[str, object], ExpiresIn: int
    ) -> str:
        self._record(
            "generate_presigned_url", {"ClientMethod": ClientMethod, **Params, "ExpiresIn": ExpiresIn}
        )
        return f"https://s3.example.test/{Params['Bucket']}/{Params['Key']}?X-Amz-Expires={ExpiresIn}"


# --- queue --------------------------------------------------------------------------------------


class FakeQueue:
    """A ``JobQueue``: records enqueued ids; ``down_after`` publishes succeed before it refuses."""

    def __init__(self, *, down_after: int | None = None) -> None:
        self.enqueued: list[uuid.UUID] = []
        self.down_after = down_after
        self.ping_error: BaseException | None = None
        #: What ``depths`` answers: messages per queue, or an error to raise.
        self.queue_depths: dict[str, int] | BaseException = {"exports": 0, "exports.DQ": 0, "exports.XQ": 0}

    async def enqueue_export(self, job_id: uuid.UUID) -> None:
        if self.down_after is not None and len(self.enqueued) >= self.down_after:
            raise QueueUnavailable("RabbitMQ publish failed: connection refused")
        self.enqueued.append(job_id)

    async def ping(self) -> None:
        if self.ping_error is not None:
            raise self.ping_error

    async def depths(self) -> dict[str, int]:
        if isinstance(self.queue_depths, BaseException):
            raise self.queue_depths
        return dict(self.queue_depths)


# --- repository ---------------------------------------------------------------------------------

CopyRows = Callable[[Job, Callable[[bytes], Awaitable[None]]], Awaitable[int]]


class FakeRepository:
    """A ``JobRepository`` over a dict. Its selections answer what a test sets; its transitions
    only fence by attempt (a stale attempt changes nothing). The SQL itself, conditions and all, is
    proven against PostgreSQL in tests/integration/test_repository.py."""

    def __init__(self, jobs: tuple[Job, ...] | list[Job] = ()) -> None:
        self.jobs: dict[uuid.UUID, Job] = {job.job_id: job for job in jobs}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.backlog_error: BaseException | None = None
        #: What ``rollup_problems`` reports (none: the rollup tables serve exports).
        self.rollup_table_problems: list[str] = []
        #: The CSV chunks ``copy_rows`` sends to the sink, and the row count it reports.
        self.chunks: list[bytes] = [(",".join(HEADER) + "\n").encode()]
        self.row_count = 0
        self.copy_error: BaseException | None = None
        #: Manifests of succeeded jobs, as ``complete`` stored them.
        self.manifests: dict[uuid.UUID, bytes] = {}
        self.copy_rows_impl: CopyRows | None = None
        self.complete_error: BaseException | None = None
        self.fail_error: BaseException | None = None
        self.get_error: BaseException | None = None
        #: What ``create`` raises instead of creating (a test's stand-in for the per-org limit).
        self.create_refused: BaseException | None = None
        # What the repository's selections answer (their SQL is proven against PostgreSQL in
        # tests/integration/test_repository.py; here a test says what they find).
        self.stale: list[uuid.UUID] = []
        self.due: list[Job] = []
        self.lapsed_requeued: list[uuid.UUID] = []
        self.lapsed_failed: list[Job] = []
        self.lapsed_cancelled: list[uuid.UUID] = []
        self.leftovers: list[Job] = []
        self.unfinished: set[uuid.UUID] = set()
        self.callers: list[Caller | None] = []
        self.idempotency: dict[str, tuple[str, uuid.UUID]] = {}
        #: Events the API recorded (download_url_issued), as (job_id, event, caller, details).
        self.recorded: list[tuple[uuid.UUID, str, Caller, Mapping[str, object] | None]] = []
        self.ping_error: BaseException | None = None
        #: The bucket_start of every rollup row, per table (what prune_rollups deletes from).
        self.rollups: dict[RollupTable, list[datetime]] = {table: [] for table in RollupTable}

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for call, args in self.calls if call == name]

    async def ping(self) -> None:
        self._record("ping")
        if self.ping_error is not None:
            raise self.ping_error

    async def create(
        self,
        request: ExportRequest,
        caller: Caller | None = None,
        *,
        idempotency: IdempotencyKey | None = None,
        max_active: int | None = None,
    ) -> Created:
        self._record("create", request, max_active)
        self.callers.append(caller)
        if idempotency is not None and idempotency.key in self.idempotency:
            request_hash, job_id = self.idempotency[idempotency.key]
            if request_hash != idempotency.request_hash:
                raise IdempotencyKeyReused("different request")
            return Created(self.jobs[job_id], new=False)
        if self.create_refused is not None:  # the per-org limit is the SQL's, proven in integration
            raise self.create_refused
        job = make_job(
            org_id=request.org_id,
            requested_by=request.requested_by,
            time_range_start=request.start,
            time_range_end=request.end,
            granularity=request.granularity,
            models=request.models,
            initiated_at=datetime.now(UTC),
            request_id=caller.request_id if caller is not None else None,
            time_zone=request.time_zone,
            output_format=request.output_format,
            output_schema=request.output_schema,
        )
        self.jobs[job.job_id] = job
        if idempotency is not None:
            self.idempotency[idempotency.key] = (idempotency.request_hash, job.job_id)
        return Created(job, new=True)

    async def forget_idempotency_keys(self, limit: int) -> int:
        self._record("forget_idempotency_keys", limit)
        return 0

    async def rollup_problems(self) -> list[str]:
        return list(self.rollup_table_problems)

    async def backlog(self) -> JobBacklog:
        self._record("backlog")
        if self.backlog_error is not None:
            raise self.backlog_error
        now = datetime.now(UTC)
        pending = [j for j in self.jobs.values() if j.status is JobStatus.PENDING]
        due = [j.available_at or j.initiated_at for j in pending if (j.available_at or j.initiated_at) <= now]
        running = sum(j.status is JobStatus.RUNNING for j in self.jobs.values())
        oldest = (now - min(due)).total_seconds() if due else 0.0
        return JobBacklog(len(pending), running, oldest)

    async def get(self, org_id: uuid.UUID, job_id: uuid.UUID) -> Job | None:
        self._record("get", org_id, job_id)
        if self.get_error is not None:
            raise self.get_error
        job = self.jobs.get(job_id)
        return job if job is not None and job.org_id == org_id else None

    async def get_manifest(self, org_id: uuid.UUID, job_id: uuid.UUID) -> tuple[Job, bytes | None] | None:
        self._record("get_manifest", org_id, job_id)
        job = await self.get(org_id, job_id)
        return (job, self.manifests.get(job_id)) if job is not None else None

    async def record_download(
        self, job: Job, caller: Caller, valid_seconds: int, *, window_seconds: float
    ) -> None:
        """Every link is an event here: counting repeats within the window is PostgreSQL's job
        (tests/integration/test_repository.py)."""
        self.recorded.append((job.job_id, "download_url_issued", caller, {"validSeconds": valid_seconds}))

    async def events(
        self, org_id: uuid.UUID, job_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> EventPage:
        after = decode_event_cursor(cursor) if cursor else 0
        events = [
            Event(i, job_id, event, c.subject, c.client_ip, c.user_agent, 1, dict(d or {}), datetime.now(UTC))
            for i, (j, event, c, d) in enumerate(self.recorded, 1)
            if j == job_id and i > after
        ]
        more = len(events) > limit
        return EventPage(
            tuple(events[:limit]), encode_event_cursor(events[limit - 1].event_id) if more else None
        )

    async def list_page(
        self,
        org_id: uuid.UUID,
        *,
        status: JobStatus | None,
        limit: int,
        cursor: str | None,
        schedule_id: uuid.UUID | None = None,
    ) -> JobPage:
        self._record("list_page", org_id, status, limit, cursor)
        after = decode_cursor(cursor) if cursor else None
        jobs = sorted(
            (
                j
                for j in self.jobs.values()
                if j.org_id == org_id
                and (status is None or j.status is status)
                and (schedule_id is None or j.schedule_id == schedule_id)
            ),
            key=lambda j: (j.initiated_at, j.job_id),
            reverse=True,
        )
        if after is not None:
            jobs = [j for j in jobs if (j.initiated_at, j.job_id) < after]
        items = tuple(jobs[:limit])
        return JobPage(items=items, next_cursor=encode_cursor(items[-1]) if len(jobs) > limit else None)

    async def claim(self, job_id: uuid.UUID, lease_seconds: float, claimed_by: str) -> Job | None:
        self._record("claim", job_id)
        job = self.jobs.get(job_id)
        now = datetime.now(UTC)
        if job is None or job.status is not JobStatus.PENDING:
            return None
        if job.available_at is not None and job.available_at > now:
            return None
        job = replace(
            job,
            status=JobStatus.RUNNING,
            attempt=job.attempt + 1,
            started_at=now,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            claimed_by=claimed_by,
            available_at=None,
        )
        self.jobs[job_id] = job
        return job

    async def renew_lease(self, job: Job, lease_seconds: float) -> Lease:
        self._record("renew_lease", job.job_id)
        if not self._owns(job):
            return Lease.LOST
        return Lease.CANCEL_REQUESTED if self.jobs[job.job_id].cancel_requested_at else Lease.HELD

    async def cancel(self, org_id: uuid.UUID, job_id: uuid.UUID, caller: Caller) -> Job | None:
        self._record("cancel", org_id, job_id)
        job = self.jobs.get(job_id)
        if job is None or job.org_id != org_id or job.status.finished:
            return None
        now = datetime.now(UTC)
        if job.status is JobStatus.PENDING:
            job = replace(job, status=JobStatus.CANCELLED, completed_at=now, cancel_requested_at=now)
        else:
            job = replace(job, cancel_requested_at=job.cancel_requested_at or now)
        self.jobs[job_id] = job
        return job

    async def cancel_running(self, job: Job) -> Job | None:
        self._record("cancel_running", job.job_id)
        if not self._owns(job):
            return None
        self.jobs[job.job_id] = replace(
            self.jobs[job.job_id], status=JobStatus.CANCELLED, lease_expires_at=None
        )
        return self.jobs[job.job_id]

    async def cancel_lapsed(self, limit: int) -> list[uuid.UUID]:
        self._record("cancel_lapsed", limit)
        return self.lapsed_cancelled[:limit]

    async def clear_upload_id(self, job_id: uuid.UUID, upload_id: str) -> None:
        self._record("clear_upload_id", job_id, upload_id)
        job = self.jobs.get(job_id)
        if job is not None and job.upload_id == upload_id:
            self.jobs[job_id] = replace(job, upload_id=None)

    async def retry(self, job: Job, reason: str, backoff_seconds: float) -> Job | None:
        self._record("retry", job.job_id, reason, backoff_seconds)
        if self.fail_error is not None:
            raise self.fail_error
        if not self._owns(job):
            return None
        self.jobs[job.job_id] = replace(
            self.jobs[job.job_id],
            status=JobStatus.PENDING,
            error_message=reason,
            available_at=datetime.now(UTC) + timedelta(seconds=backoff_seconds),
            enqueued_at=None,
            lease_expires_at=None,
        )
        return self.jobs[job.job_id]

    async def hand_back(self, job: Job) -> Job | None:
        self._record("hand_back", job.job_id)
        if not self._owns(job):
            return None
        current = self.jobs[job.job_id]
        self.jobs[job.job_id] = replace(
            current,
            status=JobStatus.PENDING,
            handbacks=current.handbacks + 1,
            enqueued_at=None,
            lease_expires_at=None,
        )
        return self.jobs[job.job_id]

    async def requeue_lapsed(self, max_attempts: int, limit: int) -> list[uuid.UUID]:
        self._record("requeue_lapsed", max_attempts, limit)
        return self.lapsed_requeued[:limit]

    async def fail_lapsed(self, max_attempts: int, limit: int) -> list[Job]:
        self._record("fail_lapsed", max_attempts, limit)
        return self.lapsed_failed[:limit]

    async def unfinished_job_ids(self, job_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        self._record("unfinished_job_ids", job_ids)
        return self.unfinished & set(job_ids)

    async def leftover_uploads(self, limit: int) -> list[Job]:
        self._record("leftover_uploads", limit)
        return self.leftovers[:limit]

    def _owns(self, job: Job) -> bool:
        current = self.jobs.get(job.job_id)
        return current is not None and current.status is JobStatus.RUNNING and current.attempt == job.attempt

    async def set_upload_id(self, job: Job, upload_id: str) -> bool:
        self._record("set_upload_id", job.job_id, upload_id)
        if not self._owns(job):
            return False
        self.jobs[job.job_id] = replace(self.jobs[job.job_id], upload_id=upload_id)
        return True

    async def copy_rows(
        self, job: Job, sink: Callable[[bytes], Awaitable[None]], focus_names: tuple[str, str] = ("", "")
    ) -> int:
        self._record("copy_rows", job.job_id)
        if self.copy_rows_impl is not None:
            return await self.copy_rows_impl(job, sink)
        for chunk in self.chunks:
            await sink(chunk)
        if self.copy_error is not None:
            raise self.copy_error
        return self.row_count

    async def complete(self, job: Job, output: ExportOutput, ttl_seconds: float) -> Job | None:
        self._record("complete", job.job_id, output, ttl_seconds)
        if self.complete_error is not None:
            raise self.complete_error
        if not self._owns(job):
            return None
        now = datetime.now(UTC)
        done = replace(
            self.jobs[job.job_id],
            status=JobStatus.SUCCEEDED,
            output_uri=output.output_uri,
            checksum=output.checksum,
            row_count=output.row_count,
            byte_count=output.byte_count,
            completed_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
            upload_id=None,
            manifest_checksum=output.manifest_checksum,
        )
        self.jobs[job.job_id] = done
        self.manifests[job.job_id] = output.manifest
        return done

    async def fail(self, job: Job, reason: str) -> Job | None:
        self._record("fail", job.job_id, reason)
        if self.fail_error is not None:
            raise self.fail_error
        if not self._owns(job):
            return None
        failed = replace(
            self.jobs[job.job_id],
            status=JobStatus.FAILED,
            error_message=reason,
            completed_at=datetime.now(UTC),
            lease_expires_at=None,
        )
        self.jobs[job.job_id] = failed
        return failed

    async def due_for_expiry(self, limit: int) -> list[Job]:
        self._record("due_for_expiry", limit)
        return self.due[:limit]

    async def expire(self, job_id: uuid.UUID) -> Job | None:
        self._record("expire", job_id)
        job = self.jobs.get(job_id)
        if job is None or job.status is not JobStatus.SUCCEEDED:
            return None
        self.jobs[job_id] = replace(job, status=JobStatus.EXPIRED)
        return self.jobs[job_id]

    async def stale_pending(
        self, unpublished_after: float, unclaimed_after: float, limit: int
    ) -> list[uuid.UUID]:
        self._record("stale_pending", unpublished_after, unclaimed_after, limit)
        return self.stale[:limit]

    async def prune_rollups(self, table: RollupTable, cutoff: datetime, limit: int) -> int:
        self._record("prune_rollups", table, cutoff, limit)
        rows = sorted(self.rollups[table])
        doomed = [t for t in rows if t < cutoff][:limit]
        self.rollups[table] = rows[len(doomed) :]
        return len(doomed)

    async def mark_enqueued(self, job_id: uuid.UUID) -> None:
        self._record("mark_enqueued", job_id)
        job = self.jobs.get(job_id)
        if job is not None and job.status is JobStatus.PENDING:
            self.jobs[job_id] = replace(job, enqueued_at=datetime.now(UTC))


# --- a tiny JSON Schema check (the keywords SCHEMAS uses, nothing else) -------------------------


def schema_errors(instance: object, schema: Mapping[str, Any]) -> list[str]:
    """Where ``instance`` breaks ``schema``, one of SCHEMAS (empty when valid), checked by the
    validator the API itself uses on requests."""
    [name] = [name for name, candidate in SCHEMAS.items() if candidate is schema]
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '$'}: {error.message}"
        for error in validator(name).iter_errors(instance)
    ]
