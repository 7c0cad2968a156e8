"""The JSON Schemas of the API's bodies (validated by service/api/contract.py and published in
the OpenAPI document), what a validated request body means, and the JSON of the answers."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.errors import ValidationFailed
from service.job import (
    MAX_TIME_RANGE,
    Coverage,
    DatasetSchema,
    Event,
    EventPage,
    ExportFormat,
    ExportRequest,
    Granularity,
    JobPage,
    JobStatus,
    job_json,
    optional_rfc3339,
    rfc3339,
)
from service.retention import retention_cutoff
from service.schedule import Cadence, Period, Recurrence, Schedule, ScheduleSpec
from service.webhook import MAX_URL_LENGTH, DeliveryPage, DeliveryStatus, Webhook, WebhookEvent

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200
MAX_MODELS: Final = 1000
MAX_MODEL_ID_LENGTH: Final = 256
#: RFC 3339 with an offset, ASCII digits only: the schema's pattern, matched whole here.
TIMESTAMP_PATTERN: Final = (
    r"^([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339: Final = re.compile(TIMESTAMP_PATTERN)


def parse_timestamp(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise ValidationFailed(f"{field} must be a string", errors={field: "must be an RFC 3339 timestamp"})
    match = _RFC3339.fullmatch(value)
    if not match:
        raise ValidationFailed(
            f"{field} must be an RFC 3339 timestamp with an offset, e.g. 2026-11-01T00:00:00Z",
            errors={field: "must be an RFC 3339 timestamp with an offset"},
        )
    date, time_, fraction, offset = match.groups()
    fraction = (fraction or "")[:7]  # Python keeps microseconds
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        # In UTC at once: an offset that pushes a year-1 or year-9999 time out of range fails here.
        return datetime.fromisoformat(f"{date}T{time_}{fraction}{offset}").astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationFailed(
            f"{field} is not a valid date and time", errors={field: "invalid date"}
        ) from None


def parse_export_request(
    body: Any,
    org_id: uuid.UUID,
    requested_by: str,
    *,
    retention_months: int | None = None,
    now: datetime | None = None,
) -> ExportRequest:
    """The export asked for by ``body``, which has passed the contract's structural validation
    (CreateExportRequest): the timestamps read, and the rules across fields applied (start
    before end, at most 31 days on the clocks of its time zone, not before the retention
    window)."""
    start = parse_timestamp(body["timeRange"]["start"], "timeRange.start")
    end = parse_timestamp(body["timeRange"]["end"], "timeRange.end")
    if start >= end:
        raise ValidationFailed(
            "timeRange.start must be before timeRange.end", errors={"timeRange": "start >= end"}
        )
    if Coverage.of(start, end).empty:
        raise ValidationFailed(
            "timeRange covers no whole hour: usage is counted in whole hourly buckets inside"
            " [start, end), and an hour only partly inside is not counted",
            errors={"timeRange": "covers no whole hour"},
        )
    too_long = ValidationFailed(
        f"timeRange may span at most {MAX_TIME_RANGE.days} days (on the clocks of timeZone)",
        errors={"timeRange": f"longer than {MAX_TIME_RANGE.days} days"},
    )
    if end - start > MAX_TIME_RANGE + MAX_CLOCK_CHANGE:
        raise too_long  # before the zone is read hour by hour over the range
    oldest = retention_cutoff(now or datetime.now(UTC), retention_months) if retention_months else None
    if oldest is not None and start < oldest:
        raise ValidationFailed(
            f"timeRange.start is before the data retention window: rollups are kept for "
            f"{retention_months} months, so the earliest start is {rfc3339(oldest)}",
            errors={"timeRange.start": f"before the {retention_months}-month retention window"},
        )
    time_zone = parse_time_zone(body.get("timeZone", "UTC"), start, end)
    if local_span(start, end, time_zone) > MAX_TIME_RANGE:
        raise too_long  # a month of local days is 31 days, even with the hour a clock change adds
    output_format, output_schema, models = parse_output(body, time_zone)
    return ExportRequest(
        org_id=org_id,
        requested_by=requested_by,
        start=start,
        end=end,
        granularity=Granularity(body["granularity"]),
        models=models,
        time_zone=time_zone,
        output_format=output_format,
        output_schema=output_schema,
    )


def parse_output(body: Any, time_zone: str) -> tuple[ExportFormat, DatasetSchema, tuple[str, ...] | None]:
    """The file a body asks for: its format, its dataset schema (FOCUS only in UTC), and its
    models (empty means every model; a duplicate means nothing more than once)."""
    output_schema = DatasetSchema(body.get("schema", DatasetSchema.NATIVE.value))
    if output_schema is DatasetSchema.FOCUS_1_0 and time_zone != "UTC":
        raise ValidationFailed(
            "a FOCUS dataset is in UTC (the specification's date-times): leave timeZone out or set UTC",
            errors={"timeZone": "must be UTC with schema focus-1.0"},
        )
    models = body.get("models")
    return (
        ExportFormat(body.get("format", ExportFormat.CSV.value)),
        output_schema,
        tuple(dict.fromkeys(models)) or None if models else None,
    )


#: The most a clock change moves a zone's clocks (Antarctica/Troll: two hours).
MAX_CLOCK_CHANGE: Final = timedelta(hours=2)


def local_span(start: datetime, end: datetime, time_zone: str) -> timedelta:
    """How long ``[start, end)`` is on the clocks of ``time_zone`` (October in Berlin: 31 days,
    though 31 days and an hour pass)."""
    zone = ZoneInfo(time_zone)
    return end.astimezone(zone).replace(tzinfo=None) - start.astimezone(zone).replace(tzinfo=None)


def parse_time_zone(name: str, start: datetime, end: datetime) -> str:
    """An IANA time zone whose offset from UTC is a whole number of hours at every hour of
    ``[start, end]``: hourly rollups cannot be split into a zone's half or quarter hours."""
    if name == "UTC":
        return name
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(
            f"timeZone {name!r} is not a known IANA time zone (e.g. Europe/Berlin, America/New_York)",
            errors={"timeZone": "unknown time zone"},
        ) from None
    moment = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while moment <= end:
        offset = moment.astimezone(zone).utcoffset() or timedelta()
        if offset % timedelta(hours=1):
            raise ValidationFailed(
                f"timeZone {name} is {offset} from UTC at {rfc3339(moment)}: usage is recorded per"
                " UTC hour, which cannot be split into that zone's days; choose a zone whose offset"
                " is a whole number of hours, or UTC",
                errors={"timeZone": "offset not a whole number of hours"},
            )
        moment += timedelta(hours=1)
    return name


def event_json(event: Event) -> dict[str, object]:
    return {
        "eventId": event.event_id,
        "event": event.event,
        "occurredAt": rfc3339(event.occurred_at),
        "actor": event.actor,
        "clientIp": event.client_ip,
        "userAgent": event.user_agent,
        "attempt": event.attempt,
        "details": dict(event.details),
    }


def page_json(page: JobPage) -> dict[str, object]:
    return {"items": [job_json(job) for job in page.items], "nextCursor": page.next_cursor}


def event_page_json(page: EventPage) -> dict[str, object]:
    return {"items": [event_json(event) for event in page.items], "nextCursor": page.next_cursor}


# --- JSON Schemas published in the OpenAPI document --------------------------------------------

_TIMESTAMP: Final = {"type": "string", "format": "date-time"}
_TIMESTAMP_IN: Final = {
    **_TIMESTAMP,
    "pattern": TIMESTAMP_PATTERN,
    "x-message": "must be an RFC 3339 timestamp with an offset, e.g. 2026-11-01T00:00:00Z",
}
#: The kinds of audit events (the CHECK constraint of analytics.export_events).
EVENT_KINDS: Final = (
    "created",
    "started",
    "succeeded",
    "failed",
    "retried",
    "handed_back",
    "cancel_requested",
    "cancelled",
    "expired",
    "download_url_issued",
)
_NULLABLE_TIMESTAMP: Final = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: Final[dict[str, dict[str, object]]] = {
    "TimeRange": {
        "type": "object",
        "additionalProperties": False,
        "required": ["start", "end"],
        "properties": {
            "start": {**_TIMESTAMP_IN, "description": "Inclusive; RFC 3339 with an offset."},
            "end": {**_TIMESTAMP_IN, "description": "Exclusive; at most 31 days after start."},
        },
    },
    "Coverage": {
        "type": "object",
        "required": ["start", "end"],
        "properties": {"start": _TIMESTAMP, "end": _TIMESTAMP},
        "description": (
            "The instants the export counts: whole hourly buckets inside timeRange, from "
            "the first hour boundary at or after its start to the last at or before its "
            "end (an hour only partly inside is not counted). Daily and monthly buckets at "
            "the edges hold only the covered hours."
        ),
    },
    "CreateExportRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["timeRange", "granularity"],
        "properties": {
            "timeRange": {"$ref": "#/components/schemas/TimeRange"},
            "granularity": {"type": "string", "enum": [g.value for g in Granularity]},
            "timeZone": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "default": "UTC",
                "description": (
                    "IANA time zone whose local days and months the daily and monthly buckets are, "
                    "and whose offset bucket_start carries; its offset must be a whole number of "
                    "hours throughout the range. Default UTC."
                ),
            },
            "models": {
                "type": ["array", "null"],
                "maxItems": MAX_MODELS,
                "items": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_MODEL_ID_LENGTH,
                    "pattern": "^[^\\x00]*$",
                    "x-message": "must not contain a NUL character",
                },
                "description": "Model ids to include; absent, null or empty means every model.",
            },
            "format": {
                "type": "string",
                "enum": [f.value for f in ExportFormat],
                "default": ExportFormat.CSV.value,
                "description": (
                    "csv (default); csv.gz: the same CSV, gzip-compressed; parquet: typed columns "
                    "(decimal128(20,6) money, timestamps with the zone, int64 counts), zstd."
                ),
            },
            "schema": {
                "type": "string",
                "enum": [d.value for d in DatasetSchema],
                "default": DatasetSchema.NATIVE.value,
                "description": (
                    "The columns: native (default), the service's own; focus-1.0, the FinOps FOCUS "
                    "1.0 columns (in UTC) with x_RequestCount and x_ErrorCount."
                ),
            },
        },
    },
    "ExportJob": {
        "type": "object",
        "required": [
            "jobId",
            "orgId",
            "requestedBy",
            "status",
            "granularity",
            "timeRange",
            "timeZone",
            "coverage",
            "models",
            "initiatedAt",
            "completedAt",
            "expiresAt",
            "rowCount",
            "byteCount",
            "checksum",
            "outputUri",
            "errorMessage",
            "cancelRequestedAt",
            "attempts",
            "nextAttemptAt",
            "format",
            "schema",
            "manifestChecksum",
            "scheduleId",
            "restatementOf",
        ],
        "properties": {
            "jobId": {"type": "string", "format": "uuid"},
            "orgId": {"type": "string", "format": "uuid"},
            "requestedBy": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in JobStatus]},
            "granularity": {"type": "string", "enum": [g.value for g in Granularity]},
            "timeRange": {"$ref": "#/components/schemas/TimeRange"},
            "timeZone": {"type": "string"},
            "coverage": {"$ref": "#/components/schemas/Coverage"},
            "models": {"type": ["array", "null"], "items": {"type": "string"}},
            "initiatedAt": _TIMESTAMP,
            "completedAt": _NULLABLE_TIMESTAMP,
            "expiresAt": _NULLABLE_TIMESTAMP,
            "rowCount": {"type": ["integer", "null"], "minimum": 0},
            "byteCount": {"type": ["integer", "null"], "minimum": 0},
            "checksum": {
                "type": ["string", "null"],
                "pattern": "^[0-9a-f]{64}$",
                "description": "Lowercase hex SHA-256 of the object's bytes.",
            },
            "outputUri": {"type": ["string", "null"], "description": "s3://bucket/key"},
            "errorMessage": {"type": ["string", "null"]},
            "cancelRequestedAt": {
                **_NULLABLE_TIMESTAMP,
                "description": "When a cancel was asked for (a running export stops at its next part).",
            },
            "attempts": {
                "type": "integer",
                "minimum": 0,
                "description": (
                    "Attempts a worker has made at this export so far, the running one included "
                    "(an attempt handed back at a worker shutdown does not count). The export "
                    "fails after EXPORT_MAX_ATTEMPTS (3) attempts that hit a passing fault."
                ),
            },
            "nextAttemptAt": {
                **_NULLABLE_TIMESTAMP,
                "description": (
                    "Set while a pending export waits to be retried after a failed attempt "
                    "(errorMessage says why): no worker starts it before this time. Null otherwise."
                ),
            },
            "format": {"type": "string", "enum": [f.value for f in ExportFormat]},
            "schema": {"type": "string", "enum": [d.value for d in DatasetSchema]},
            "manifestChecksum": {
                "type": ["string", "null"],
                "pattern": "^[0-9a-f]{64}$",
                "description": "Lowercase hex SHA-256 of the manifest (GET .../manifest), once succeeded.",
            },
            "scheduleId": {
                "type": ["string", "null"],
                "format": "uuid",
                "description": "The export schedule that made the job; null for a requested one.",
            },
            "restatementOf": {
                "type": ["string", "null"],
                "format": "uuid",
                "description": "The delivered export of the same schedule and period this one exports "
                "again, its totals having changed since (late usage); null otherwise.",
            },
        },
    },
    "ExportManifest": {
        "type": "object",
        "description": (
            "What the export wrote and counted; stored beside the data file as its last write. "
            "Totals are counted from the rows streamed, per currency, money as exact decimals."
        ),
        "required": [
            "manifestVersion",
            "jobId",
            "orgId",
            "request",
            "files",
            "totals",
            "generatedAt",
            "generator",
        ],
        "properties": {
            "manifestVersion": {"type": "integer", "const": 1},
            "jobId": {"type": "string", "format": "uuid"},
            "orgId": {"type": "string", "format": "uuid"},
            "request": {
                "type": "object",
                "required": [
                    "granularity",
                    "timeRange",
                    "timeZone",
                    "coverage",
                    "models",
                    "format",
                    "schema",
                ],
                "properties": {
                    "granularity": {"type": "string", "enum": [g.value for g in Granularity]},
                    "timeRange": {"$ref": "#/components/schemas/TimeRange"},
                    "timeZone": {"type": "string"},
                    "coverage": {"$ref": "#/components/schemas/Coverage"},
                    "models": {"type": ["array", "null"], "items": {"type": "string"}},
                    "format": {"type": "string", "enum": [f.value for f in ExportFormat]},
                    "schema": {"type": "string", "enum": [d.value for d in DatasetSchema]},
                },
            },
            "files": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["key", "rows", "bytes", "sha256", "contentType", "contentEncoding"],
                    "properties": {
                        "key": {"type": "string"},
                        "rows": {"type": "integer", "minimum": 0},
                        "bytes": {"type": "integer", "minimum": 0},
                        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "contentType": {"type": "string"},
                        "contentEncoding": {"type": ["string", "null"], "enum": ["gzip", None]},
                        "uncompressed": {
                            "type": "object",
                            "required": ["bytes", "sha256"],
                            "properties": {
                                "bytes": {"type": "integer", "minimum": 0},
                                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                            },
                        },
                    },
                },
            },
            "totals": {
                "type": "object",
                "description": "Per ISO 4217 currency: the exact sums of the file's rows in it.",
                "propertyNames": {"pattern": "^[A-Z]{3}$"},
                "additionalProperties": {
                    "type": "object",
                    "required": ["costTotal", "requestCount", "tokensTotal", "errorCount"],
                    "properties": {
                        "costTotal": {"type": "string", "pattern": "^-?[0-9]+\\.[0-9]{6}$"},
                        "requestCount": {"type": "integer"},
                        "tokensTotal": {"type": "integer"},
                        "errorCount": {"type": "integer"},
                    },
                },
            },
            "generatedAt": _TIMESTAMP,
            "generator": {
                "type": "object",
                "required": ["name", "version"],
                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            },
        },
    },
    "ExportJobPage": {
        "type": "object",
        "required": ["items", "nextCursor"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/ExportJob"}},
            "nextCursor": {"type": ["string", "null"], "description": "Pass as ?cursor= for the next page."},
        },
    },
    "ExportEvent": {
        "type": "object",
        "required": [
            "eventId",
            "event",
            "occurredAt",
            "actor",
            "clientIp",
            "userAgent",
            "attempt",
            "details",
        ],
        "properties": {
            "eventId": {"type": "integer"},
            "event": {"type": "string", "enum": list(EVENT_KINDS)},
            "occurredAt": _TIMESTAMP,
            "actor": {"type": ["string", "null"], "description": "Token subject, or the worker (host:pid)."},
            "clientIp": {"type": ["string", "null"]},
            "userAgent": {"type": ["string", "null"]},
            "attempt": {"type": ["integer", "null"]},
            "details": {"type": "object"},
        },
    },
    "ExportEventList": {
        "type": "object",
        "required": ["items", "nextCursor"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/ExportEvent"}},
            "nextCursor": {"type": ["string", "null"], "description": "Pass as ?cursor= for the next page."},
        },
    },
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri-reference"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Offending fields and what is wrong with each (validation errors).",
            },
        },
    },
}


# --- export schedules ---------------------------------------------------------------------------

#: How far ahead a schedule's time zone must keep whole-hour offsets (its next year of runs).
ZONE_HORIZON: Final = timedelta(days=400)
DEFAULT_RUN_AT_HOUR: Final = 6
_EXPORT_FIELDS: Final = SCHEMAS["CreateExportRequest"]["properties"]
assert isinstance(_EXPORT_FIELDS, dict)
_SCHEDULE_FIELDS: Final[dict[str, object]] = {
    "cadence": {
        "type": "string",
        "enum": [c.value for c in Cadence],
        "description": "daily; weekly (Mondays); monthly (the 1st), at runAtHour in timeZone.",
    },
    "period": {
        "type": "string",
        "enum": [p.value for p in Period],
        "description": (
            "What each run exports, in local days of timeZone: previous_day, previous_week "
            "(Monday to Monday), previous_month, or month_to_date (the 1st of the month of the "
            "day before the run, up to the run's day; on the 1st, the whole month just ended)."
        ),
    },
    "timeZone": {
        **_EXPORT_FIELDS["timeZone"],
        "description": "IANA time zone of the runs and the periods (whole-hour offsets). Default UTC.",
    },
    "runAtHour": {
        "type": "integer",
        "minimum": 0,
        "maximum": 23,
        "default": DEFAULT_RUN_AT_HOUR,
        "description": "Local hour of the runs (default 6: after the night's rollups).",
    },
    "granularity": _EXPORT_FIELDS["granularity"],
    "models": _EXPORT_FIELDS["models"],
    "format": _EXPORT_FIELDS["format"],
    "schema": _EXPORT_FIELDS["schema"],
    "enabled": {"type": "boolean", "default": True, "description": "A disabled schedule makes no run."},
}
SCHEMAS["CreateExportScheduleRequest"] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["cadence", "period", "granularity"],
    "properties": _SCHEDULE_FIELDS,
}
SCHEMAS["UpdateExportScheduleRequest"] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": _SCHEDULE_FIELDS,
    "description": "The fields to change; the others keep their values.",
}
SCHEMAS["ExportSchedule"] = {
    "type": "object",
    "required": [
        "scheduleId",
        "orgId",
        "createdBy",
        *_SCHEDULE_FIELDS,
        "nextRunAt",
        "lastRunAt",
        "lastJobId",
        "createdAt",
        "updatedAt",
    ],
    "properties": {
        "scheduleId": {"type": "string", "format": "uuid"},
        "orgId": {"type": "string", "format": "uuid"},
        "createdBy": {"type": "string", "description": "Who created it; its jobs' requestedBy."},
        **_SCHEDULE_FIELDS,
        "nextRunAt": {**_TIMESTAMP, "description": "The next run not yet made."},
        "lastRunAt": _NULLABLE_TIMESTAMP,
        "lastJobId": {"type": ["string", "null"], "format": "uuid"},
        "createdAt": _TIMESTAMP,
        "updatedAt": _TIMESTAMP,
    },
}
SCHEMAS["ExportScheduleList"] = {
    "type": "object",
    "required": ["items"],
    "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/ExportSchedule"}}},
}


def schedule_body(schedule: Schedule) -> dict[str, object]:
    """The fields a schedule was made with, as the request body says them."""
    spec, r = schedule.spec, schedule.recurrence
    return {
        "cadence": r.cadence.value,
        "period": r.period.value,
        "timeZone": r.time_zone,
        "runAtHour": r.run_at_hour,
        "granularity": spec.granularity.value,
        "models": list(spec.models) if spec.models is not None else None,
        "format": spec.output_format.value,
        "schema": spec.output_schema.value,
        "enabled": spec.enabled,
    }


def parse_schedule_spec(body: Any, now: datetime | None = None) -> ScheduleSpec:
    """What a schedule body (CreateExportScheduleRequest, or an update merged onto the current
    fields) asks for, its rules across fields applied."""
    now = now or datetime.now(UTC)
    time_zone = parse_time_zone(body.get("timeZone", "UTC"), now, now + ZONE_HORIZON)
    output_format, output_schema, models = parse_output(body, time_zone)
    return ScheduleSpec(
        recurrence=Recurrence(
            Cadence(body["cadence"]),
            Period(body["period"]),
            time_zone,
            int(body.get("runAtHour", DEFAULT_RUN_AT_HOUR)),  # JSON Schema's integer includes 6.0
        ),
        granularity=Granularity(body["granularity"]),
        models=models,
        output_format=output_format,
        output_schema=output_schema,
        enabled=body.get("enabled", True),
    )


def schedule_json(schedule: Schedule) -> dict[str, object]:
    opt = optional_rfc3339
    return {
        "scheduleId": str(schedule.schedule_id),
        "orgId": str(schedule.org_id),
        "createdBy": schedule.created_by,
        **schedule_body(schedule),
        "nextRunAt": rfc3339(schedule.next_run_at),
        "lastRunAt": opt(schedule.last_run_at),
        "lastJobId": str(schedule.last_job_id) if schedule.last_job_id is not None else None,
        "createdAt": rfc3339(schedule.created_at),
        "updatedAt": rfc3339(schedule.updated_at),
    }


# --- webhooks ----------------------------------------------------------------------------------

_WEBHOOK_FIELDS: Final[dict[str, object]] = {
    "url": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_URL_LENGTH,
        "description": "Where deliveries are POSTed: an https:// URL of a public host.",
    },
    "events": {
        "type": "array",
        "minItems": 1,
        "uniqueItems": True,
        "items": {"type": "string", "enum": [e.value for e in WebhookEvent]},
        "description": "The events it gets.",
        "x-message": "must list one or more of " + ", ".join(e.value for e in WebhookEvent) + ", each once",
    },
}
SCHEMAS["Caller"] = {
    "type": "object",
    "required": ["subject", "orgs", "scopes"],
    "properties": {
        "subject": {"type": "string", "description": "The token's sub."},
        "orgs": {"type": "array", "items": {"type": "string", "format": "uuid"}},
        "scopes": {"type": "array", "items": {"type": "string"}},
    },
}
SCHEMAS["CreateWebhookRequest"] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url", "events"],
    "properties": _WEBHOOK_FIELDS,
}
SCHEMAS["UpdateWebhookRequest"] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        **_WEBHOOK_FIELDS,
        "enabled": {
            "type": "boolean",
            "description": "false stops deliveries (waiting ones fail); true starts them again.",
        },
    },
    "description": "The fields to change; the others keep their values.",
}
_WEBHOOK_PROPERTIES: Final[dict[str, object]] = {
    "webhookId": {"type": "string", "format": "uuid"},
    "orgId": {"type": "string", "format": "uuid"},
    "createdBy": {"type": "string"},
    **_WEBHOOK_FIELDS,
    "enabled": {"type": "boolean"},
    "disabledReason": {
        "type": ["string", "null"],
        "description": "Why it is disabled: by its owner, or after failing every attempt for a day.",
    },
    "disabledAt": _NULLABLE_TIMESTAMP,
    "failingSince": {
        **_NULLABLE_TIMESTAMP,
        "description": "The first failed attempt since the last delivery (null: not failing).",
    },
    "previousSecretExpiresAt": {
        **_NULLABLE_TIMESTAMP,
        "description": "After a rotation, until when deliveries are signed with the old secret too.",
    },
    "createdAt": _TIMESTAMP,
    "updatedAt": _TIMESTAMP,
}
SCHEMAS["Webhook"] = {
    "type": "object",
    "required": list(_WEBHOOK_PROPERTIES),
    "properties": _WEBHOOK_PROPERTIES,
}
SCHEMAS["WebhookWithSecret"] = {
    "type": "object",
    "required": [*_WEBHOOK_PROPERTIES, "secret"],
    "properties": {
        **_WEBHOOK_PROPERTIES,
        "secret": {
            "type": "string",
            "pattern": "^whsec_[A-Za-z0-9+/]+={0,2}$",
            "description": "The signing secret: shown only in this answer.",
        },
    },
}
SCHEMAS["WebhookList"] = {
    "type": "object",
    "required": ["items"],
    "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Webhook"}}},
}
_ATTEMPT_PROPERTIES: Final[dict[str, object]] = {
    "attempt": {"type": "integer", "minimum": 1},
    "attemptedAt": _TIMESTAMP,
    "statusCode": {"type": ["integer", "null"], "description": "null: no answer (timeout, refused)."},
    "error": {"type": ["string", "null"], "description": "null: delivered."},
    "durationMs": {"type": "integer", "minimum": 0},
}
_DELIVERY_PROPERTIES: Final[dict[str, object]] = {
    "deliveryId": {"type": "string", "format": "uuid"},
    "messageId": {"type": "string", "description": "The webhook-id header of every attempt."},
    "event": {"type": "string", "enum": [e.value for e in WebhookEvent]},
    "jobId": {"type": "string", "format": "uuid"},
    "status": {"type": "string", "enum": [s.value for s in DeliveryStatus]},
    "attempts": {
        "type": "array",
        "items": {"type": "object", "required": list(_ATTEMPT_PROPERTIES), "properties": _ATTEMPT_PROPERTIES},
    },
    "nextAttemptAt": _NULLABLE_TIMESTAMP,
    "createdAt": _TIMESTAMP,
    "finishedAt": _NULLABLE_TIMESTAMP,
}
SCHEMAS["WebhookDelivery"] = {
    "type": "object",
    "required": list(_DELIVERY_PROPERTIES),
    "properties": _DELIVERY_PROPERTIES,
}
SCHEMAS["WebhookDeliveryList"] = {
    "type": "object",
    "required": ["items", "nextCursor"],
    "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/WebhookDelivery"}},
        "nextCursor": {"type": ["string", "null"]},
    },
}


def parse_webhook_events(body: Any) -> tuple[WebhookEvent, ...] | None:
    """The events of a webhook body, in the order sent (None: not in the body)."""
    return tuple(WebhookEvent(e) for e in body["events"]) if "events" in body else None


def webhook_json(webhook: Webhook, secret: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "webhookId": str(webhook.webhook_id),
        "orgId": str(webhook.org_id),
        "createdBy": webhook.created_by,
        "url": webhook.url,
        "events": [e.value for e in webhook.events],
        "enabled": webhook.enabled,
        "disabledReason": webhook.disabled_reason,
        "disabledAt": optional_rfc3339(webhook.disabled_at),
        "failingSince": optional_rfc3339(webhook.failing_since),
        "previousSecretExpiresAt": optional_rfc3339(webhook.previous_secret_expires_at),
        "createdAt": rfc3339(webhook.created_at),
        "updatedAt": rfc3339(webhook.updated_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body


def delivery_page_json(page: DeliveryPage) -> dict[str, object]:
    return {
        "items": [
            {
                "deliveryId": str(d.delivery_id),
                "messageId": d.message_id,
                "event": d.event.value,
                "jobId": str(d.job_id),
                "status": d.status.value,
                "attempts": [
                    {
                        "attempt": a.attempt,
                        "attemptedAt": rfc3339(a.attempted_at),
                        "statusCode": a.status_code,
                        "error": a.error,
                        "durationMs": a.duration_ms,
                    }
                    for a in d.attempts
                ],
                "nextAttemptAt": optional_rfc3339(d.next_attempt_at),
                "createdAt": rfc3339(d.created_at),
                "finishedAt": optional_rfc3339(d.finished_at),
            }
            for d in page.items
        ],
        "nextCursor": page.next_cursor,
    }
