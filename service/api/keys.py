"""Typed application keys: the API's state lives on the app, never in module globals."""

from __future__ import annotations

from aiohttp import web

from service.api.auth import TokenVerifier
from service.api.connections import ConnectionGuard
from service.exports import ExportService
from service.metrics import ApiMetrics
from service.queue import JobQueue
from service.repository import JobRepository
from service.scheduling import ScheduleService
from service.settings import Settings
from service.storage import ObjectStore
from service.webhook_endpoints import WebhookService

SETTINGS = web.AppKey("settings", Settings)
REPOSITORY = web.AppKey("repository", JobRepository)
STORE = web.AppKey("store", ObjectStore)
QUEUE = web.AppKey("queue", JobQueue)
EXPORTS = web.AppKey("exports", ExportService)
SCHEDULES = web.AppKey("schedules", ScheduleService)
WEBHOOKS = web.AppKey("webhooks", WebhookService)
OPENAPI = web.AppKey("openapi", dict[str, object])
VERIFIER = web.AppKey("verifier", TokenVerifier)
METRICS = web.AppKey("metrics", ApiMetrics)
GUARD = web.AppKey("guard", ConnectionGuard)
#: The headers every file of the self-serve page is served with (its CSP among them).
PAGE_HEADERS = web.AppKey("page_headers", dict[str, str])
#: Per request (on the request, not the app): the id its log lines and its job carry.
REQUEST_ID = web.RequestKey("request_id", str)
