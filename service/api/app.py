"""``create_app(settings, queue)``: the aiohttp application, one cleanup context per resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from service.api import keys
from service.api.auth import TokenVerifier
from service.api.connections import ConnectionGuard
from service.api.contract import add_routes
from service.api.page import add_page_routes
from service.api.problems import problem_middleware
from service.api.routes import ROUTES, openapi_document
from service.api.server import guard_middleware
from service.api.telemetry import telemetry_middleware
from service.exports import ExportService
from service.metrics import ApiMetrics
from service.queue import JobQueue
from service.repository import JobRepository, create_pool
from service.scheduling import ScheduleService
from service.settings import Settings
from service.storage import ObjectStore, open_s3_client
from service.webhook_endpoints import WebhookService

log = logging.getLogger(__name__)
#: Request bodies are small JSON documents; anything larger is refused with 413.
MAX_BODY_BYTES = 64 * 1024


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool = await create_pool(settings.database_url, max_size=10)
    app[keys.REPOSITORY] = JobRepository(pool, tables=settings.rollup_tables)
    yield
    await pool.close()


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    async with open_s3_client(settings) as client, open_s3_client(settings, public=True) as signer:
        app[keys.STORE] = ObjectStore.from_settings(client, settings, signer=signer)
        yield


async def exports_ctx(app: web.Application) -> AsyncIterator[None]:
    app[keys.EXPORTS] = ExportService(
        app[keys.REPOSITORY],
        app[keys.STORE],
        app[keys.QUEUE],
        max_active_per_org=app[keys.SETTINGS].export_max_active_per_org,
    )
    app[keys.SCHEDULES] = ScheduleService(
        app[keys.REPOSITORY], retention_months=app[keys.SETTINGS].data_retention_months
    )
    app[keys.WEBHOOKS] = WebhookService(
        app[keys.REPOSITORY], allow_private_urls=app[keys.SETTINGS].webhook_allow_private_urls
    )
    yield


def create_app(settings: Settings, queue: JobQueue) -> web.Application:
    """The API: routes and middleware, and a cleanup context per resource (pool, S3 client).
    A SettingsError when it could not verify a token (no AUTH_JWT_SECRET nor AUTH_JWKS_URL)."""
    settings.require_token_verification()
    app = wired_app(settings, queue)
    app.cleanup_ctx.extend([database_ctx, storage_ctx, exports_ctx])
    return app


async def drop_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """No ``Server: Python/3.x aiohttp/3.y``: versions help only whoever looks for a known flaw."""
    response.headers.popall("Server", None)


def wired_app(settings: Settings, queue: JobQueue) -> web.Application:
    """Everything but the resources: unit tests add fakes of the repository, store and service."""
    # Outermost first: telemetry sees the final response, problem+json ones included.
    app = web.Application(
        middlewares=[guard_middleware, telemetry_middleware, problem_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app.on_response_prepare.append(drop_server_header)
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = metrics = ApiMetrics()
    app[keys.GUARD] = ConnectionGuard.from_settings(settings, metrics)
    app[keys.QUEUE] = queue
    app[keys.OPENAPI] = openapi_document()
    app[keys.VERIFIER] = TokenVerifier(
        settings.auth_jwt_secret,
        issuer=settings.auth_jwt_issuer,
        audience=settings.auth_jwt_audience,
        jwks_url=settings.auth_jwks_url,
        previous_secrets=settings.auth_jwt_previous_secrets,
    )
    add_routes(app, ROUTES)
    add_page_routes(app)
    return app
