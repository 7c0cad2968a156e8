"""Serving the API: aiohttp's runner, its connections guarded (:mod:`service.api.connections`), on
HTTP_PORT and, when set, METRICS_PORT.

With ``METRICS_PORT`` set, the same app also listens there, and :func:`internal_only` tells the
handlers for ``/metrics`` and the readiness details whether a request came in on that port, so
an operator can keep them off the public network.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from service.api import keys
from service.api.problems import Handler
from service.metrics import ApiMetrics
from service.settings import Settings

log = logging.getLogger(__name__)
#: How long a stopping API lets requests in flight finish.
SHUTDOWN_TIMEOUT_S: Final = 30.0
#: After a handler returned without reading the whole body, how long aiohttp reads (and drops)
#: the rest before it closes the connection (its default is 10 s).
LINGERING_TIME_S: Final = 2.0
#: At most one log line per this many seconds for malformed HTTP (each one is counted).
MALFORMED_LOG_INTERVAL_S: Final = 10.0


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's guard that a request's headers are complete, and when it is done.
    (Requests served without a guard, as in tests, pass straight through.)"""
    guarded = request.app[keys.GUARD].of(request.transport)
    if guarded is None:
        return await handler(request)
    guarded.request_started()
    try:
        return await handler(request)
    finally:
        guarded.request_finished()


def internal_only(request: web.Request) -> bool:
    """Whether ``request`` may see what only operators should (metrics, readiness details): it
    came in on METRICS_PORT, or METRICS_PORT is 0 and everything is served on HTTP_PORT."""
    port = request.app[keys.SETTINGS].metrics_port
    if port == 0:
        return True
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    return isinstance(sockname, tuple) and len(sockname) >= 2 and sockname[1] == port


class MalformedRequestLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's logger for errors raised before any handler runs: malformed HTTP, which anyone on
    the network can send. Each is counted; at most one warning line per
    MALFORMED_LOG_INTERVAL_S, without a traceback, says how many there were."""

    def __init__(self, metrics: ApiMetrics) -> None:
        super().__init__(logging.getLogger("service.api.http"), {})
        self._metrics = metrics
        self._next_line = 0.0
        self._unlogged = 0

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        self._metrics.malformed_requests.inc()
        self._unlogged += 1
        now = time.monotonic()
        if now < self._next_line:
            return
        self._next_line = now + MALFORMED_LOG_INTERVAL_S
        reason = type(exc_info).__name__ if isinstance(exc_info, BaseException) else "error"
        self.logger.warning(
            "malformed HTTP request refused",
            extra={"reason": reason, "count": self._unlogged, "peer": str(args[0]) if args else None},
        )
        self._unlogged = 0


@dataclass
class Listening:
    """The API accepting connections: stop it with :meth:`stop`."""

    runner: web.AppRunner
    servers: list[asyncio.Server]

    @property
    def ports(self) -> list[int]:
        return [int(server.sockets[0].getsockname()[1]) for server in self.servers]

    async def stop(self) -> None:
        """Accept nothing more, let requests in flight finish (SHUTDOWN_TIMEOUT_S), clean up."""
        for server in self.servers:
            server.close()
        await self.runner.cleanup()


async def listen(app: web.Application, settings: Settings) -> Listening:
    """Serve ``app`` on HTTP_PORT and, when set, METRICS_PORT, each connection guarded. OSError
    when a port cannot be bound (nothing is left listening then)."""
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=settings.http_keepalive_timeout,
        lingering_time=LINGERING_TIME_S,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        logger=MalformedRequestLog(app[keys.METRICS]),
    )
    await runner.setup()
    listening = Listening(runner, [])
    loop = asyncio.get_running_loop()
    protocol = app[keys.GUARD].protocol_factory(runner.server)  # type: ignore[arg-type]
    try:
        for port in [settings.http_port, *([settings.metrics_port] if settings.metrics_port else [])]:
            server = await loop.create_server(protocol, settings.http_host, port, reuse_address=True)
            listening.servers.append(server)
    except OSError:
        await listening.stop()
        raise
    return listening


async def _serve(app: web.Application, settings: Settings) -> None:
    listening = await listen(app, settings)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info(
            "api listening",
            extra={
                "host": settings.http_host,
                "port": settings.http_port,
                "metrics_port": settings.metrics_port,
            },
        )
        await stop.wait()
        log.info("api stopping", extra={"grace_s": SHUTDOWN_TIMEOUT_S})
    finally:
        await listening.stop()


def serve(app: web.Application, settings: Settings) -> None:
    """Run the API until SIGTERM or SIGINT, then let requests in flight finish. OSError when a
    port cannot be bound."""
    asyncio.run(_serve(app, settings))
