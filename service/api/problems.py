"""The one place that turns exceptions into HTTP responses: RFC 9457 problem+json."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from service.errors import ApiError, ClientClosedRequest, RequestTimeout, Unauthenticated

log = logging.getLogger(__name__)
PROBLEM_TYPE_BASE = "https://analytics-exports.dev/problems/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    except ApiError as exc:
        response = problem_response(exc.status, exc.slug, exc.title, exc.detail, exc.errors)
        if isinstance(exc, Unauthenticated):
            response.headers["WWW-Authenticate"] = 'Bearer realm="analytics-exports"'
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        if exc.status >= 500:
            log.warning("request failed: %s", exc.detail, extra={"path": request.path})
        elif isinstance(exc, ClientClosedRequest | RequestTimeout):
            log.info("request not received: %s", exc.detail, extra={"path": request.path})
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
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return problem_response(
            500, "internal-error", "Internal server error", "an unexpected error occurred"
        )
