"""Per request: a request id, the logging context, and the request metrics.

The request id is the client's ``X-Request-ID`` when it is a plausible id (1 to 128 visible
ASCII characters), otherwise one made up here. It is echoed in the response, bound to every log
line of the request, and stored on a job the request creates, so the worker's lines for that
export carry it too.
"""

from __future__ import annotations

import random
import re
import time
from typing import Final

from aiohttp import web

from service.api import keys
from service.api.problems import Handler
from service.logs import log_context

HEADER: Final = "X-Request-ID"
_PLAUSIBLE: Final = re.compile(r"[\x21-\x7e]{1,128}")
#: The metrics' route label for a request no route matched (bounded: never the raw path).
UNMATCHED: Final = "unmatched"
#: The status counted for a request whose client went away before it was answered.
CLIENT_CLOSED: Final = 499


def request_id_of(request: web.Request) -> str:
    """The id given by the client if it is plausible, else a new one."""
    given = request.headers.get(HEADER, "")
    # Unique, not secret: 128 bits of the per-process-seeded generator, without uuid4's system call.
    return given if _PLAUSIBLE.fullmatch(given) else f"{random.getrandbits(128):032x}"


#: Methods counted by name; any other (a client may send any token) is counted as "other", so
#: no client can add metric series.
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_of(request: web.Request) -> str:
    return request.method if request.method in METHODS else "other"


def route_of(request: web.Request) -> str:
    """The matched route's template (``/analytics/v1/orgs/{orgId}/exports``), never the path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def telemetry_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: sees the final response, problem responses included."""
    request_id = request_id_of(request)
    request[keys.REQUEST_ID] = request_id
    started = time.perf_counter()
    # A handler is only cancelled when its connection is gone (the client hung up, or the server is
    # stopping): nothing was answered, which nginx and others count as 499, never as a 5xx.
    status = CLIENT_CLOSED
    try:
        with log_context(request_id=request_id):
            response = await handler(request)
        status = response.status
        response.headers[HEADER] = request_id
        return response
    finally:
        request.app[keys.METRICS].observe_request(
            route_of(request), method_of(request), status, time.perf_counter() - started
        )
