"""HTTP handlers: each takes what the contract validated (service/api/routes.py), calls one
service function and serialises."""

from __future__ import annotations

import uuid

import orjson
from aiohttp import web

from service.api import keys
from service.api.auth import Principal
from service.api.contract import Call
from service.api.schemas import (
    delivery_page_json,
    event_page_json,
    page_json,
    parse_export_request,
    parse_schedule_spec,
    parse_webhook_events,
    schedule_body,
    schedule_json,
    webhook_json,
)
from service.api.server import internal_only
from service.job import API_BASE, Caller, JobStatus, job_json, job_path
from service.metrics import CONTENT_TYPE
from service.schedule import Schedule, ScheduleSpec
from service.webhook import WebhookChange

BASE = API_BASE


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer that no cache keeps: jobs and audit events name people and addresses."""
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def caller_of(request: web.Request, principal: Principal) -> Caller:
    """The audit trail's view of a request: the token's subject, the peer address (behind a proxy,
    the proxy's: see docs/security.md) and the user agent."""
    return Caller(
        principal.subject, request.remote, request.headers.get("User-Agent"), request.get(keys.REQUEST_ID)
    )


async def create_export(request: web.Request, call: Call) -> web.Response:
    export = parse_export_request(
        call.body,
        call.org_id,
        call.caller.subject,
        retention_months=request.app[keys.SETTINGS].data_retention_months,
    )
    created = await request.app[keys.EXPORTS].create(
        export, caller_of(request, call.caller), request.headers.get("Idempotency-Key")
    )
    headers = {"Location": job_path(call.org_id, created.job.job_id)}
    if not created.new:
        headers["Idempotent-Replayed"] = "true"
    return json_response(job_json(created.job), status=202, headers=headers)


async def list_exports(request: web.Request, call: Call) -> web.Response:
    status = call.query.get("status")
    schedule_id = call.query.get("scheduleId")
    page = await request.app[keys.EXPORTS].list_page(
        call.org_id,
        status=JobStatus(status) if status is not None else None,
        limit=call.query["limit"],
        cursor=call.query.get("cursor"),
        schedule_id=uuid.UUID(schedule_id) if schedule_id is not None else None,
    )
    return json_response(page_json(page))


async def get_export(request: web.Request, call: Call) -> web.Response:
    return json_response(job_json(await request.app[keys.EXPORTS].get(call.org_id, call.job_id)))


async def cancel_export(request: web.Request, call: Call) -> web.Response:
    job = await request.app[keys.EXPORTS].cancel(call.org_id, call.job_id, caller_of(request, call.caller))
    return json_response(job_json(job), status=202)


async def list_events(request: web.Request, call: Call) -> web.Response:
    page = await request.app[keys.EXPORTS].events(
        call.org_id, call.job_id, limit=call.query["limit"], cursor=call.query.get("cursor")
    )
    return json_response(event_page_json(page))


async def download_export(request: web.Request, call: Call) -> web.Response:
    download = await request.app[keys.EXPORTS].download(
        call.org_id, call.job_id, caller_of(request, call.caller)
    )
    return web.Response(status=302, headers={"Location": download.url, "Cache-Control": "no-store"})


async def get_manifest(request: web.Request, call: Call) -> web.Response:
    manifest = await request.app[keys.EXPORTS].manifest(call.org_id, call.job_id)
    return web.Response(body=manifest, content_type="application/json", headers={"Cache-Control": "no-store"})


async def openapi_document(request: web.Request, call: Call) -> web.Response:
    return json_response(request.app[keys.OPENAPI])


async def metrics(request: web.Request, call: Call) -> web.Response:
    """Prometheus text format: this process's request metrics and the backlog read just now.
    Only on METRICS_PORT when that is set."""
    if not internal_only(request):
        raise web.HTTPNotFound()
    registry = request.app[keys.METRICS]
    backlog, report = await request.app[keys.EXPORTS].scrape(request.app[keys.SETTINGS].buckets)
    registry.observe_backlog(backlog)
    registry.observe_dependencies(report)
    registry.open_connections.set(request.app[keys.GUARD].open_connections)
    return web.Response(body=registry.render(), headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request, call: Call) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request, call: Call) -> web.Response:
    """503 only when this instance cannot serve requests (the database does not answer). The
    broker down (the API still accepts exports: the sweep publishes them later) or a bucket
    missing (only exports to it fail) is ``degraded``, still 200, so a load balancer keeps every
    instance in rotation. Which check failed, and why, only on METRICS_PORT when that is set."""
    report = await request.app[keys.EXPORTS].dependencies(request.app[keys.SETTINGS].buckets)
    request.app[keys.METRICS].observe_dependencies(report)
    status = "unavailable" if report["database"] else "degraded" if any(report.values()) else "ready"
    body: dict[str, object] = {"status": status}
    if internal_only(request):
        body["checks"] = {name: f"error: {problem}" if problem else "ok" for name, problem in report.items()}
    return json_response(body, status=503 if status == "unavailable" else 200)


def schedule_location(org_id: uuid.UUID, schedule_id: uuid.UUID) -> str:
    return f"{BASE}/orgs/{org_id}/export-schedules/{schedule_id}"


async def create_schedule(request: web.Request, call: Call) -> web.Response:
    spec = parse_schedule_spec(call.body)
    schedule = await request.app[keys.SCHEDULES].create(call.org_id, call.caller.subject, spec)
    headers = {"Location": schedule_location(call.org_id, schedule.schedule_id)}
    return json_response(schedule_json(schedule), status=201, headers=headers)


async def list_schedules(request: web.Request, call: Call) -> web.Response:
    schedules = await request.app[keys.SCHEDULES].all_of(call.org_id)
    return json_response({"items": [schedule_json(schedule) for schedule in schedules]})


async def get_schedule(request: web.Request, call: Call) -> web.Response:
    schedule = await request.app[keys.SCHEDULES].get(call.org_id, call.path["scheduleId"])
    return json_response(schedule_json(schedule))


async def update_schedule(request: web.Request, call: Call) -> web.Response:
    def merged(current: Schedule) -> ScheduleSpec:  # the fields sent over the current ones
        return parse_schedule_spec({**schedule_body(current), **call.body})

    updated = await request.app[keys.SCHEDULES].update(call.org_id, call.path["scheduleId"], merged)
    return json_response(schedule_json(updated))


async def delete_schedule(request: web.Request, call: Call) -> web.Response:
    await request.app[keys.SCHEDULES].delete(call.org_id, call.path["scheduleId"])
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


def webhook_location(org_id: uuid.UUID, webhook_id: uuid.UUID) -> str:
    return f"{BASE}/orgs/{org_id}/webhooks/{webhook_id}"


async def create_webhook(request: web.Request, call: Call) -> web.Response:
    events = parse_webhook_events(call.body)
    assert events is not None  # required by the schema
    service = request.app[keys.WEBHOOKS]
    webhook, secret = await service.create(call.org_id, call.caller.subject, call.body["url"], events)
    headers = {"Location": webhook_location(call.org_id, webhook.webhook_id)}
    return json_response(webhook_json(webhook, secret), status=201, headers=headers)


async def list_webhooks(request: web.Request, call: Call) -> web.Response:
    webhooks = await request.app[keys.WEBHOOKS].all_of(call.org_id)
    return json_response({"items": [webhook_json(webhook) for webhook in webhooks]})


async def get_webhook(request: web.Request, call: Call) -> web.Response:
    webhook = await request.app[keys.WEBHOOKS].get(call.org_id, call.path["webhookId"])
    return json_response(webhook_json(webhook))


async def update_webhook(request: web.Request, call: Call) -> web.Response:
    change = WebhookChange(call.body.get("url"), parse_webhook_events(call.body), call.body.get("enabled"))
    webhook = await request.app[keys.WEBHOOKS].update(call.org_id, call.path["webhookId"], change)
    return json_response(webhook_json(webhook))


async def delete_webhook(request: web.Request, call: Call) -> web.Response:
    await request.app[keys.WEBHOOKS].delete(call.org_id, call.path["webhookId"])
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


async def rotate_webhook_secret(request: web.Request, call: Call) -> web.Response:
    webhook, secret = await request.app[keys.WEBHOOKS].rotate_secret(call.org_id, call.path["webhookId"])
    return json_response(webhook_json(webhook, secret))


async def list_deliveries(request: web.Request, call: Call) -> web.Response:
    page = await request.app[keys.WEBHOOKS].deliveries(
        call.org_id, call.path["webhookId"], limit=call.query["limit"], cursor=call.query.get("cursor")
    )
    return json_response(delivery_page_json(page))


async def get_caller(request: web.Request, call: Call) -> web.Response:
    principal = call.caller
    return json_response(
        {
            "subject": principal.subject,
            "orgs": sorted(str(org) for org in principal.orgs),
            "scopes": sorted(principal.scopes),
        }
    )
