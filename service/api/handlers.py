"""HTTP handlers: each parses, calls one service function and serialises."""

from __future__ import annotations

import asyncio
import re
import uuid

import orjson
from aiohttp import web

from service.api import keys
from service.api.auth import READ, WRITE, Principal
from service.api.schemas import (
    event_page_json,
    job_json,
    page_json,
    parse_events_query,
    parse_export_request,
    parse_list_query,
    parse_uuid,
)
from service.api.server import internal_only
from service.errors import (
    ClientClosedRequest,
    ExportsError,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationFailed,
)
from service.job import Caller
from service.metrics import CONTENT_TYPE

BASE = "/analytics/v1"
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer that no cache keeps: jobs and audit events name people and addresses."""
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


async def authorize(request: web.Request, scope: str) -> tuple[Principal, uuid.UUID]:
    """401 without a valid token, 400 for a malformed org id, 403 without access to it."""
    principal = await request.app[keys.VERIFIER].verify(request.headers.get("Authorization"))
    org_id = parse_uuid(request.match_info["org_id"], "orgId")
    principal.require(org_id, scope)
    return principal, org_id


def caller_of(request: web.Request, principal: Principal) -> Caller:
    """The audit trail's view of a request: the token's subject, the peer address (behind a proxy,
    the proxy's: see docs/security.md) and the user agent."""
    return Caller(
        principal.subject, request.remote, request.headers.get("User-Agent"), request.get(keys.REQUEST_ID)
    )


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ValidationFailed(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
            errors={"Idempotency-Key": "invalid"},
        )
    return key


async def read_body(request: web.Request) -> bytes:
    """The whole body, within HTTP_BODY_TIMEOUT of starting to read it (408 after), or
    ClientClosedRequest when the client went away mid-body."""
    try:
        async with asyncio.timeout(request.app[keys.SETTINGS].http_body_timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {request.app[keys.SETTINGS].http_body_timeout:g} s"
        ) from None
    except ConnectionResetError:
        raise ClientClosedRequest("the client closed the connection before its body arrived") from None


def job_location(org_id: uuid.UUID, job_id: uuid.UUID) -> str:
    return f"{BASE}/orgs/{org_id}/exports/{job_id}"


async def create_export(request: web.Request) -> web.Response:
    principal, org_id = await authorize(request, WRITE)
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the request body as application/json")
    try:
        body = orjson.loads(await read_body(request))
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"request body is not valid JSON: {exc}") from None
    export = parse_export_request(
        body, org_id, principal.subject, retention_months=request.app[keys.SETTINGS].data_retention_months
    )
    created = await request.app[keys.EXPORTS].create(
        export, caller_of(request, principal), idempotency_key(request)
    )
    headers = {"Location": job_location(org_id, created.job.job_id)}
    if not created.new:
        headers["Idempotent-Replayed"] = "true"
    return json_response(job_json(created.job), status=202, headers=headers)


async def list_exports(request: web.Request) -> web.Response:
    _, org_id = await authorize(request, READ)
    status, limit, cursor = parse_list_query(request.query)
    page = await request.app[keys.EXPORTS].list_page(org_id, status=status, limit=limit, cursor=cursor)
    return json_response(page_json(page))


async def get_export(request: web.Request) -> web.Response:
    _, org_id = await authorize(request, READ)
    job_id = parse_uuid(request.match_info["job_id"], "jobId")
    return json_response(job_json(await request.app[keys.EXPORTS].get(org_id, job_id)))


async def cancel_export(request: web.Request) -> web.Response:
    principal, org_id = await authorize(request, WRITE)
    job_id = parse_uuid(request.match_info["job_id"], "jobId")
    job = await request.app[keys.EXPORTS].cancel(org_id, job_id, caller_of(request, principal))
    return json_response(job_json(job), status=202)


async def list_events(request: web.Request) -> web.Response:
    _, org_id = await authorize(request, READ)
    job_id = parse_uuid(request.match_info["job_id"], "jobId")
    limit, cursor = parse_events_query(request.query)
    page = await request.app[keys.EXPORTS].events(org_id, job_id, limit=limit, cursor=cursor)
    return json_response(event_page_json(page))


async def download_export(request: web.Request) -> web.Response:
    principal, org_id = await authorize(request, READ)
    job_id = parse_uuid(request.match_info["job_id"], "jobId")
    download = await request.app[keys.EXPORTS].download(org_id, job_id, caller_of(request, principal))
    return web.Response(status=302, headers={"Location": download.url, "Cache-Control": "no-store"})


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(request.app[keys.OPENAPI])


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format: this process's request metrics and the backlog read just now.
    Only on METRICS_PORT when that is set."""
    if not internal_only(request):
        raise web.HTTPNotFound()
    registry = request.app[keys.METRICS]
    registry.observe_backlog(await request.app[keys.EXPORTS].backlog())
    registry.open_connections.set(request.app[keys.GUARD].open_connections)
    return web.Response(body=registry.render(), headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database, the broker and every configured bucket answer. Which check
    failed, and why, only on METRICS_PORT when that is set."""
    app = request.app
    settings = app[keys.SETTINGS]
    buckets = sorted({settings.s3_bucket, *settings.s3_bucket_overrides.values()})
    checks = {
        "database": app[keys.REPOSITORY].ping(),
        "broker": app[keys.QUEUE].ping(),
        **{f"bucket:{bucket}": app[keys.STORE].check_bucket(bucket) for bucket in buckets},
    }
    results = await asyncio.gather(
        *(asyncio.wait_for(check, timeout=3) for check in checks.values()), return_exceptions=True
    )
    report = {}
    for name, result in zip(checks, results, strict=True):
        if isinstance(result, ExportsError | TimeoutError | OSError):
            report[name] = f"error: {result or type(result).__name__}"
        elif isinstance(result, BaseException):
            raise result
        else:
            report[name] = "ok"
    ready = all(value == "ok" for value in report.values())
    body: dict[str, object] = {"status": "ready" if ready else "unavailable"}
    if internal_only(request):
        body["checks"] = report
    return json_response(body, status=200 if ready else 503)


def add_routes(app: web.Application) -> None:
    org = BASE + "/orgs/{org_id}/exports"
    app.router.add_post(org, create_export, name="create_export")
    app.router.add_get(org, list_exports, name="list_exports")
    app.router.add_get(org + "/{job_id}", get_export, name="get_export")
    app.router.add_get(org + "/{job_id}/download", download_export, name="download_export")
    app.router.add_get(org + "/{job_id}/events", list_events, name="list_events")
    app.router.add_post(org + "/{job_id}/cancel", cancel_export, name="cancel_export")
    app.router.add_get(BASE + "/openapi.json", openapi_document, name="openapi")
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
