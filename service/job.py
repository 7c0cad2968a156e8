"""Export jobs: statuses, granularities, the request that creates a job, and the job itself."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Final


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED)

    @property
    def object_removed(self) -> bool:
        """A job in this state must have no object at its key (nor any upload)."""
        return self in (JobStatus.FAILED, JobStatus.CANCELLED)


class Lease(enum.Enum):
    """What a heartbeat learns: the attempt still holds the job, lost it, or is asked to stop."""

    HELD = "held"
    LOST = "lost"
    CANCEL_REQUESTED = "cancel_requested"


class Granularity(enum.StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"
    MONTHLY = "monthly"


class ExportFormat(enum.StrEnum):
    """How the rows are written: CSV, gzip-compressed CSV, or Parquet."""

    CSV = "csv"
    CSV_GZ = "csv.gz"
    PARQUET = "parquet"

    @property
    def extension(self) -> str:
        return self.value


class DatasetSchema(enum.StrEnum):
    """Which columns: the service's own (``native``) or the FinOps FOCUS 1.0 columns."""

    NATIVE = "native"
    FOCUS_1_0 = "focus-1.0"


#: The widest time range one export may cover (spec: max 31 days).
MAX_TIME_RANGE = timedelta(days=31)


HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Coverage:
    """The instants an export counts: the whole hourly buckets inside the requested range, from the
    first hour boundary at or after its start to the last one at or before its end. An hour only
    partly inside the range is not counted (its rollup cannot be split)."""

    start: datetime
    end: datetime

    @classmethod
    def of(cls, start: datetime, end: datetime) -> Coverage:
        """The coverage of ``[start, end)`` (empty, ``start == end``, when it holds no whole hour)."""
        first = _floor_hour(start)
        if first < start:
            first += HOUR
        return cls(first, max(first, _floor_hour(end)))

    @property
    def empty(self) -> bool:
        return self.start >= self.end


def _floor_hour(moment: datetime) -> datetime:
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return utc.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """A validated request for an export: what the API accepted and the worker will produce."""

    org_id: uuid.UUID
    requested_by: str
    start: datetime
    end: datetime
    granularity: Granularity
    #: ``None`` means every model.
    models: tuple[str, ...] | None
    #: The IANA time zone whose days and months the buckets are (and whose offsets they carry).
    time_zone: str = "UTC"
    output_format: ExportFormat = ExportFormat.CSV
    output_schema: DatasetSchema = DatasetSchema.NATIVE


@dataclass(frozen=True, slots=True)
class Job:
    job_id: uuid.UUID
    org_id: uuid.UUID
    requested_by: str
    time_range_start: datetime
    time_range_end: datetime
    granularity: Granularity
    models: tuple[str, ...] | None
    status: JobStatus
    output_uri: str | None
    checksum: str | None
    row_count: int | None
    byte_count: int | None
    initiated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    expires_at: datetime | None
    error_message: str | None
    attempt: int
    upload_id: str | None
    enqueued_at: datetime | None
    lease_expires_at: datetime | None
    claimed_by: str | None
    handbacks: int
    available_at: datetime | None
    cancel_requested_at: datetime | None
    #: The API request that created the job (its X-Request-ID), for following it through the logs.
    request_id: str | None
    time_zone: str = "UTC"
    output_format: ExportFormat = ExportFormat.CSV
    output_schema: DatasetSchema = DatasetSchema.NATIVE
    #: SHA-256 of the manifest a succeeded job wrote (jobs that succeeded before manifests: None).
    manifest_checksum: str | None = None
    #: The schedule that made the job (None: requested through the API).
    schedule_id: uuid.UUID | None = None
    #: The delivered job whose period this one exports again, its totals having changed since.
    restatement_of: uuid.UUID | None = None

    @property
    def object_key(self) -> str:
        """The S3 key of the job's data file."""
        return object_key(self.org_id, self.job_id, self.output_format)

    @property
    def manifest_key(self) -> str:
        """The S3 key of the job's manifest."""
        return manifest_key(self.org_id, self.job_id)

    @property
    def coverage(self) -> Coverage:
        """What the export counts (the API accepts only ranges that cover a whole hour)."""
        return Coverage.of(self.time_range_start, self.time_range_end)

    @property
    def request(self) -> ExportRequest:
        """What the job exports, as a request for it."""
        return ExportRequest(
            self.org_id,
            self.requested_by,
            self.time_range_start,
            self.time_range_end,
            self.granularity,
            self.models,
            self.time_zone,
            self.output_format,
            self.output_schema,
        )

    @property
    def charged_attempts(self) -> int:
        """Attempts that count against EXPORT_MAX_ATTEMPTS: claims not handed back cleanly."""
        return self.attempt - self.handbacks

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> Job:
        values = {name: row[name] for name in _JOB_FIELDS}
        values["granularity"] = Granularity(str(values["granularity"]))
        values["status"] = JobStatus(str(values["status"]))
        values["output_format"] = ExportFormat(str(values["output_format"]))
        values["output_schema"] = DatasetSchema(str(values["output_schema"]))
        models = values["models"]
        values["models"] = tuple(models) if isinstance(models, Sequence) else None
        return cls(**values)  # type: ignore[arg-type]


_JOB_FIELDS: Final = tuple(f.name for f in fields(Job))


@dataclass(frozen=True, slots=True)
class Created:
    job: Job
    #: False when an Idempotency-Key replayed an earlier request: the job is the one it created.
    new: bool


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's Idempotency-Key and the fingerprint of the request it came with."""

    key: str
    request_hash: str


@dataclass(frozen=True, slots=True)
class JobBacklog:
    """Work waiting or under way, across every org."""

    pending: int
    running: int
    #: How long the oldest pending job has been due to run; 0 when none is waiting.
    oldest_pending_seconds: float
    #: Enabled export schedules whose next run is over SCHEDULE_OVERDUE_SECONDS late.
    overdue_schedules: int = 0
    #: Webhook deliveries due that long ago without an attempt.
    overdue_webhook_deliveries: int = 0


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made an API call, as the audit trail records it."""

    subject: str
    client_ip: str | None
    user_agent: str | None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a job's append-only audit trail."""

    event_id: int
    job_id: uuid.UUID
    event: str
    actor: str | None
    client_ip: str | None
    user_agent: str | None
    attempt: int | None
    details: Mapping[str, object]
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class EventPage:
    items: tuple[Event, ...]
    #: Opaque cursor for the next page, or ``None`` on the last page.
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class JobPage:
    items: tuple[Job, ...]
    #: Opaque cursor for the next page, or ``None`` on the last page.
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ExportOutput:
    """What one attempt produced: the data file's exact byte-level facts, and its manifest."""

    output_uri: str
    checksum: str
    row_count: int
    byte_count: int
    #: The manifest as written to S3, and its SHA-256.
    manifest: bytes
    manifest_checksum: str


#: Where the API's routes live.
API_BASE: Final = "/analytics/v1"


def job_path(org_id: uuid.UUID, job_id: uuid.UUID) -> str:
    """The API path of a job (its download is ``/download`` under it)."""
    return f"{API_BASE}/orgs/{org_id}/exports/{job_id}"


def rfc3339(value: datetime) -> str:
    """UTC with a ``Z`` suffix (microseconds only when present), as every API time is written."""
    utc = value if value.tzinfo is UTC else value.astimezone(UTC)  # asyncpg's are UTC already
    return utc.isoformat().replace("+00:00", "Z")


def job_json(job: Job) -> dict[str, object]:
    """The job as the API returns it (and a webhook's payload carries it)."""
    coverage = job.coverage
    opt = optional_rfc3339
    return {
        "jobId": str(job.job_id),
        "orgId": str(job.org_id),
        "requestedBy": job.requested_by,
        "status": job.status.value,
        "granularity": job.granularity.value,
        "timeRange": {"start": rfc3339(job.time_range_start), "end": rfc3339(job.time_range_end)},
        "timeZone": job.time_zone,
        "coverage": {"start": rfc3339(coverage.start), "end": rfc3339(coverage.end)},
        "models": list(job.models) if job.models is not None else None,
        "initiatedAt": rfc3339(job.initiated_at),
        "completedAt": opt(job.completed_at),
        "expiresAt": opt(job.expires_at),
        "rowCount": job.row_count,
        "byteCount": job.byte_count,
        "checksum": job.checksum,
        "outputUri": job.output_uri,
        "errorMessage": job.error_message,
        "cancelRequestedAt": opt(job.cancel_requested_at),
        "attempts": job.charged_attempts,
        # Only a pending job waits for a retry; the column outlives the wait (a cancel keeps it).
        "nextAttemptAt": opt(job.available_at) if job.status is JobStatus.PENDING else None,
        "format": job.output_format.value,
        "schema": job.output_schema.value,
        "manifestChecksum": job.manifest_checksum,
        "scheduleId": str(job.schedule_id) if job.schedule_id is not None else None,
        "restatementOf": str(job.restatement_of) if job.restatement_of is not None else None,
    }


def optional_rfc3339(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


#: Where every export object lives: ``{EXPORT_PREFIX}{org_id}/{job_id}.<extension>``.
EXPORT_PREFIX = "analytics/exports/"
MANIFEST_EXTENSION = "manifest.json"


def object_key(org_id: uuid.UUID, job_id: uuid.UUID, output_format: ExportFormat = ExportFormat.CSV) -> str:
    """The S3 key of a job's data file (spec: ``analytics/exports/{org_id}/{job_id}.csv``; the
    extension follows the format)."""
    return f"{EXPORT_PREFIX}{org_id}/{job_id}.{output_format.extension}"


def manifest_key(org_id: uuid.UUID, job_id: uuid.UUID) -> str:
    """The S3 key of a job's manifest, beside its data file."""
    return f"{EXPORT_PREFIX}{org_id}/{job_id}.{MANIFEST_EXTENSION}"


def job_id_of(key: str) -> uuid.UUID | None:
    """The job id in an export object's key (data file or manifest), if the key has that shape."""
    name = key.rsplit("/", 1)[-1]
    for extension in (*(f.extension for f in ExportFormat), MANIFEST_EXTENSION):
        if name.endswith("." + extension):
            try:
                return uuid.UUID(name.removesuffix("." + extension))
            except ValueError:
                return None
    return None
