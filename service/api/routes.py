"""Every operation of the API, declared once: the route table, request validation and the
OpenAPI document all come from :data:`ROUTES` (service/api/contract.py)."""

from __future__ import annotations

from typing import Final

from service.api import handlers
from service.api.auth import READ, SIGNED_IN, WRITE
from service.api.contract import Answer, Parameter, Route, build_openapi, problem
from service.api.schemas import DEFAULT_LIMIT, MAX_LIMIT
from service.job import JobStatus

BASE: Final = handlers.BASE
EXPORTS: Final = BASE + "/orgs/{orgId}/exports"
JOB: Final = EXPORTS + "/{jobId}"
SCHEDULES: Final = BASE + "/orgs/{orgId}/export-schedules"
SCHEDULE: Final = SCHEDULES + "/{scheduleId}"
WEBHOOKS: Final = BASE + "/orgs/{orgId}/webhooks"
WEBHOOK: Final = WEBHOOKS + "/{webhookId}"

_UUID: Final = {"type": "string", "format": "uuid"}
ORG_ID: Final = Parameter("orgId", "path", _UUID, required=True)
JOB_ID: Final = Parameter("jobId", "path", _UUID, required=True)
SCHEDULE_ID: Final = Parameter("scheduleId", "path", _UUID, required=True)
WEBHOOK_ID: Final = Parameter("webhookId", "path", _UUID, required=True)
BY_SCHEDULE: Final = Parameter(
    "scheduleId", "query", _UUID, description="Only the exports this export schedule made."
)
LIMIT: Final = Parameter(
    "limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}
)
CURSOR: Final = Parameter(
    "cursor", "query", {"type": "string", "minLength": 1}, description="The nextCursor of the page before."
)
STATUS: Final = Parameter("status", "query", {"type": "string", "enum": [s.value for s in JobStatus]})
IDEMPOTENCY_KEY: Final = Parameter(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    description="Same key and body within 24 h: the same job (Idempotent-Replayed: true); same key, "
    "different body: 422.",
)

RETRY_AFTER: Final = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}
#: What every operation with a scope may answer before its handler runs.
GUARDED: Final = {
    400: problem("Malformed input (ids, query, body); `errors` names the fields."),
    401: problem("Missing, invalid or expired bearer token."),
    403: problem("The token lacks the scope or does not grant the org."),
    503: problem(
        "A backing service (the database, the identity provider's keys) is unavailable; "
        "try again after Retry-After.",
        RETRY_AFTER,
    ),
}
NO_SUCH_JOB: Final = {404: problem("No such job in this org.")}
NO_SUCH_SCHEDULE: Final = {404: problem("No such export schedule in this org.")}
NO_SUCH_WEBHOOK: Final = {404: problem("No such webhook in this org.")}
BODY_REFUSED: Final = {
    408: problem("The body did not arrive within HTTP_BODY_TIMEOUT; the connection is closed."),
    413: problem("Request body too large."),
    415: problem("Request body is not application/json."),
}

ROUTES: Final[tuple[Route, ...]] = (
    Route(
        "GET",
        BASE + "/me",
        "getCaller",
        "Who the bearer token says the caller is: its subject, the orgs and the scopes it grants "
        "(any valid token; the self-serve page shows them).",
        handlers.get_caller,
        SIGNED_IN,
        {
            200: Answer("The caller.", "Caller"),
            401: problem("Missing, invalid or expired bearer token."),
            503: problem(
                "The identity provider's keys are unavailable; try again after Retry-After.", RETRY_AFTER
            ),
        },
    ),
    Route(
        "POST",
        EXPORTS,
        "createExport",
        "Request an export (scope exports:write).",
        handlers.create_export,
        WRITE,
        {
            202: Answer(
                "Accepted: the job, pending.",
                "ExportJob",
                headers={"Location": {"schema": {"type": "string"}, "description": "The job's URL."}},
            ),
            **GUARDED,
            408: problem("The body did not arrive within HTTP_BODY_TIMEOUT; the connection is closed."),
            413: problem("Request body too large."),
            415: problem("Request body is not application/json."),
            422: problem("The Idempotency-Key was used for a different request in the last 24 h."),
            429: problem("The org has EXPORT_MAX_ACTIVE_PER_ORG exports pending or running.", RETRY_AFTER),
        },
        (ORG_ID, IDEMPOTENCY_KEY),
        body="CreateExportRequest",
    ),
    Route(
        "GET",
        EXPORTS,
        "listExports",
        "List the org's exports, newest first (scope exports:read).",
        handlers.list_exports,
        READ,
        {200: Answer("A page of jobs.", "ExportJobPage"), **GUARDED},
        (ORG_ID, STATUS, BY_SCHEDULE, LIMIT, CURSOR),
    ),
    Route(
        "GET",
        JOB,
        "getExport",
        "One export job (scope exports:read).",
        handlers.get_export,
        READ,
        {200: Answer("The job.", "ExportJob"), **GUARDED, **NO_SUCH_JOB},
        (ORG_ID, JOB_ID),
    ),
    Route(
        "GET",
        JOB + "/download",
        "downloadExport",
        "Redirect to a presigned URL for the CSV, valid until the job expires.",
        handlers.download_export,
        READ,
        {
            302: Answer(
                "Redirect to the object.",
                headers={
                    "Location": {"schema": {"type": "string"}, "description": "Presigned S3 GET URL."},
                    "Cache-Control": {"schema": {"type": "string", "enum": ["no-store"]}},
                },
            ),
            **GUARDED,
            **NO_SUCH_JOB,
            409: problem("The job has not succeeded (pending, running or failed)."),
            410: problem("The export expired and its file was deleted."),
        },
        (ORG_ID, JOB_ID),
    ),
    Route(
        "GET",
        JOB + "/manifest",
        "getExportManifest",
        "The manifest of a succeeded export: its files with their SHA-256, and its totals per "
        "currency (scope exports:read). Byte for byte the manifest stored beside the file; its "
        "SHA-256 is the job's manifestChecksum.",
        handlers.get_manifest,
        READ,
        {
            200: Answer("The manifest.", "ExportManifest"),
            **GUARDED,
            **NO_SUCH_JOB,
            409: problem("The job has not succeeded (pending, running, failed, cancelled or expired)."),
        },
        (ORG_ID, JOB_ID),
    ),
    Route(
        "POST",
        JOB + "/cancel",
        "cancelExport",
        "Cancel an export (scope exports:write): a pending one at once, a running one at its next part.",
        handlers.cancel_export,
        WRITE,
        {
            202: Answer("The job: cancelled, or running with cancelRequestedAt set.", "ExportJob"),
            **GUARDED,
            **NO_SUCH_JOB,
            409: problem("The export already finished."),
        },
        (ORG_ID, JOB_ID),
    ),
    Route(
        "GET",
        JOB + "/events",
        "listExportEvents",
        "The job's append-only audit trail, oldest first, paged (scope exports:read).",
        handlers.list_events,
        READ,
        {200: Answer("The events.", "ExportEventList"), **GUARDED, **NO_SUCH_JOB},
        (ORG_ID, JOB_ID, LIMIT, CURSOR),
    ),
    Route(
        "POST",
        SCHEDULES,
        "createExportSchedule",
        "Create a recurring export (scope exports:write): at each run, one ordinary export of "
        "the period, made by the scheduler.",
        handlers.create_schedule,
        WRITE,
        {
            201: Answer(
                "Created: the schedule, with its first run.",
                "ExportSchedule",
                headers={"Location": {"schema": {"type": "string"}, "description": "The schedule's URL."}},
            ),
            **GUARDED,
            **BODY_REFUSED,
            409: problem("The org already has as many export schedules as it may (100)."),
        },
        (ORG_ID,),
        body="CreateExportScheduleRequest",
    ),
    Route(
        "GET",
        SCHEDULES,
        "listExportSchedules",
        "The org's export schedules, oldest first (scope exports:read).",
        handlers.list_schedules,
        READ,
        {200: Answer("The schedules.", "ExportScheduleList"), **GUARDED},
        (ORG_ID,),
    ),
    Route(
        "GET",
        SCHEDULE,
        "getExportSchedule",
        "One export schedule (scope exports:read).",
        handlers.get_schedule,
        READ,
        {200: Answer("The schedule.", "ExportSchedule"), **GUARDED, **NO_SUCH_SCHEDULE},
        (ORG_ID, SCHEDULE_ID),
    ),
    Route(
        "PATCH",
        SCHEDULE,
        "updateExportSchedule",
        "Change an export schedule (scope exports:write); fields left out keep their values. "
        "When cadence, period, timeZone or runAtHour change, its next run is the new schedule's "
        "first after the last run made; enabled again, its first after now.",
        handlers.update_schedule,
        WRITE,
        {200: Answer("The schedule.", "ExportSchedule"), **GUARDED, **BODY_REFUSED, **NO_SUCH_SCHEDULE},
        (ORG_ID, SCHEDULE_ID),
        body="UpdateExportScheduleRequest",
    ),
    Route(
        "DELETE",
        SCHEDULE,
        "deleteExportSchedule",
        "Delete an export schedule (scope exports:write); the exports it made stay.",
        handlers.delete_schedule,
        WRITE,
        {204: Answer("Deleted."), **GUARDED, **NO_SUCH_SCHEDULE},
        (ORG_ID, SCHEDULE_ID),
    ),
    Route(
        "POST",
        WEBHOOKS,
        "createWebhook",
        "Register a webhook endpoint (scope exports:write). The answer holds its signing secret, "
        "which no later answer shows.",
        handlers.create_webhook,
        WRITE,
        {
            201: Answer(
                "Created: the endpoint and its secret.",
                "WebhookWithSecret",
                headers={"Location": {"schema": {"type": "string"}, "description": "The webhook's URL."}},
            ),
            **GUARDED,
            **BODY_REFUSED,
            409: problem("The org already has as many webhooks as it may (20)."),
        },
        (ORG_ID,),
        body="CreateWebhookRequest",
    ),
    Route(
        "GET",
        WEBHOOKS,
        "listWebhooks",
        "The org's webhook endpoints, oldest first (scope exports:read).",
        handlers.list_webhooks,
        READ,
        {200: Answer("The endpoints.", "WebhookList"), **GUARDED},
        (ORG_ID,),
    ),
    Route(
        "GET",
        WEBHOOK,
        "getWebhook",
        "One webhook endpoint (scope exports:read).",
        handlers.get_webhook,
        READ,
        {200: Answer("The endpoint.", "Webhook"), **GUARDED, **NO_SUCH_WEBHOOK},
        (ORG_ID, WEBHOOK_ID),
    ),
    Route(
        "PATCH",
        WEBHOOK,
        "updateWebhook",
        "Change a webhook endpoint's URL or events, or disable or enable it (scope exports:write).",
        handlers.update_webhook,
        WRITE,
        {200: Answer("The endpoint.", "Webhook"), **GUARDED, **BODY_REFUSED, **NO_SUCH_WEBHOOK},
        (ORG_ID, WEBHOOK_ID),
        body="UpdateWebhookRequest",
    ),
    Route(
        "DELETE",
        WEBHOOK,
        "deleteWebhook",
        "Delete a webhook endpoint and its deliveries (scope exports:write).",
        handlers.delete_webhook,
        WRITE,
        {204: Answer("Deleted."), **GUARDED, **NO_SUCH_WEBHOOK},
        (ORG_ID, WEBHOOK_ID),
    ),
    Route(
        "POST",
        WEBHOOK + "/rotate-secret",
        "rotateWebhookSecret",
        "A new signing secret (scope exports:write); for 24 hours deliveries carry a signature "
        "with the old one too.",
        handlers.rotate_webhook_secret,
        WRITE,
        {200: Answer("The endpoint and its new secret.", "WebhookWithSecret"), **GUARDED, **NO_SUCH_WEBHOOK},
        (ORG_ID, WEBHOOK_ID),
    ),
    Route(
        "GET",
        WEBHOOK + "/deliveries",
        "listWebhookDeliveries",
        "The endpoint's deliveries, newest first, each with its attempts and the status codes "
        "they got (scope exports:read).",
        handlers.list_deliveries,
        READ,
        {200: Answer("The deliveries.", "WebhookDeliveryList"), **GUARDED, **NO_SUCH_WEBHOOK},
        (ORG_ID, WEBHOOK_ID, LIMIT, CURSOR),
    ),
    Route(
        "GET",
        BASE + "/openapi.json",
        "openapi",
        "This document.",
        handlers.openapi_document,
        None,
        {200: Answer("The OpenAPI document.", content_type="application/json")},
    ),
    Route("GET", "/healthz", "healthz", "Liveness.", handlers.healthz, None, {200: Answer("Alive.")}),
    Route(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics: requests, connections, the export backlog (text format 0.0.4). Served on "
        "METRICS_PORT, or here when METRICS_PORT is 0.",
        handlers.metrics,
        None,
        {
            200: Answer("Metrics in Prometheus text format.", content_type="text/plain"),
            404: problem("Not on this port: METRICS_PORT is set, and /metrics is served there."),
        },
    ),
    Route(
        "GET",
        "/readyz",
        "readyz",
        "Readiness: database, broker and buckets reachable. Which check failed (`checks`) only on "
        "METRICS_PORT, or here when METRICS_PORT is 0.",
        handlers.readyz,
        None,
        {200: Answer("Ready."), 503: Answer("A dependency is unreachable.")},
    ),
)


def openapi_document() -> dict[str, object]:
    """The OpenAPI document of :data:`ROUTES` (``analytics-exports openapi`` writes it)."""
    return build_openapi(ROUTES)
