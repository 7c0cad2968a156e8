"""The one place that turns exceptions into HTTP responses: RFC 9457 problem+json.

Each kind of error the service raises has one row in :data:`PROBLEMS`: its status, the stable
``type`` slug clients can match on, and a title. The errors themselves know nothing of HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import orjson
from aiohttp import web

from service.errors import (
    BackendUnavailable,
    ClientClosedRequest,
    Conflict,
    ExportsError,
    Forbidden,
    Gone,
    IdempotencyKeyReused,
    NotFound,
    RequestTimeout,
    TooManyActiveExports,
    Unauthenticated,
    UnsupportedMediaType,
    ValidationFailed,
)

log = logging.getLogger(__name__)
PROBLEM_TYPE_BASE = "https://analytics-exports.dev/problems/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Outages of a backing service usually pass in seconds (a failover, a restart): clients poll
#: again after this many seconds.
UNAVAILABLE_RETRY_AFTER: Final = 5


@dataclass(frozen=True, slots=True)
class Problem:
    status: int
    slug: str
    title: str


#: How each error is answered. An error not listed (nor a subclass of one listed) is a 500.
PROBLEMS: Final[dict[type[ExportsError], Problem]] = {
    ValidationFailed: Problem(400, "validation-error", "Request validation failed"),
    Unauthenticated: Problem(401, "unauthenticated", "Missing or invalid bearer token"),
    Forbidden: Problem(403, "forbidden", "Not allowed"),
    NotFound: Problem(404, "not-found", "Not found"),
    RequestTimeout: Problem(408, "request-timeout", "Request not received in time"),
    Conflict: Problem(409, "conflict", "Conflict with the job's current state"),
    Gone: Problem(410, "gone", "Export expired"),
    UnsupportedMediaType: Problem(415, "unsupported-media-type", "Unsupported media type"),
    IdempotencyKeyReused: Problem(
        422, "idempotency-key-reused", "Idempotency-Key already used for a different request"
    ),
    TooManyActiveExports: Problem(
        429, "too-many-active-exports", "Too many exports in progress for this org"
    ),
    # Never sent (the client is gone); counted as 499 in the request metrics.
    ClientClosedRequest: Problem(499, "client-closed-request", "Client closed the request"),
    BackendUnavailable: Problem(503, "service-unavailable", "A backing service is unavailable"),
}


def problem_for(error: ExportsError) -> Problem | None:
    """The row of ``error``'s class, or of the nearest of its bases that has one."""
    for kind in type(error).__mro__:
        if kind in PROBLEMS:
            return PROBLEMS[kind]
    return None


def retry_after(error: ExportsError) -> int | None:
    """Seconds a client should wait before trying again (the Retry-After header), if it should."""
    if isinstance(error, TooManyActiveExports):
        return error.retry_after
    if isinstance(error, BackendUnavailable):
        return UNAVAILABLE_RETRY_AFTER
    return None


def problem_response(
    status: int, slug: str, title: str, detail: str, errors: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/problem+json",
        headers={"Cache-Control": "no-store"},
    )


_HTTP_SLUGS = {
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ExportsError as exc:
        problem = problem_for(exc)
        if problem is None:
            return unexpected(request)
        detail = str(exc)
        errors = getattr(exc, "errors", None)
        response = problem_response(problem.status, problem.slug, problem.title, detail, errors)
        if isinstance(exc, Unauthenticated):
            response.headers["WWW-Authenticate"] = 'Bearer realm="analytics-exports"'
        if (seconds := retry_after(exc)) is not None:
            response.headers["Retry-After"] = str(seconds)
        if problem.status >= 500:
            log.warning("request failed: %s", detail, extra={"path": request.path})
        elif isinstance(exc, ClientClosedRequest | RequestTimeout):
            log.info("request not received: %s", detail, extra={"path": request.path})
            response.force_close()
            if isinstance(exc, RequestTimeout) and request.transport is not None:
                # Answer, then hang up now: a slow sender would otherwise be read from for
                # aiohttp's lingering time.
                await response.prepare(request)
                await response.write_eof()
                request.transport.close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        slug, title = _HTTP_SLUGS.get(exc.status, ("http-error", exc.reason))
        response = problem_response(exc.status, slug, title, exc.text or exc.reason)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        return unexpected(request)


def unexpected(request: web.Request) -> web.Response:
    """A 500 that says nothing of the cause; the traceback goes to the log."""
    log.exception("unhandled error", extra={"path": request.path, "method": request.method})
    return problem_response(500, "internal-error", "Internal server error", "an unexpected error occurred")
