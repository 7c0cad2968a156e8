"""The API's connections: aiohttp's protocol behind a guard against slow and surplus clients.

aiohttp bounds an idle keep-alive connection (``HTTP_KEEPALIVE_TIMEOUT``) and a body read by a
handler (``HTTP_BODY_TIMEOUT``, in the handlers), but not a request whose line and headers arrive
a byte at a time, nor how many connections are open. :class:`ConnectionGuard` wraps each of
aiohttp's connection protocols to add both:

- a request's line and headers must have arrived ``HTTP_HEADER_TIMEOUT`` after its first byte
  (or after the connection opened, for the first request); otherwise the client gets a 408 and
  the connection is closed;
- at most ``HTTP_MAX_CONNECTIONS`` connections are open at once; the next gets a 503 and is
  closed at once.

It only observes the bytes (everything is passed to aiohttp unchanged) and learns that a
request's headers are complete when the request reaches the middleware in
:mod:`service.api.server`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson

from service.api.problems import PROBLEM_TYPE_BASE
from service.metrics import ApiMetrics
from service.settings import Settings

log = logging.getLogger(__name__)


def raw_problem(status: int, reason: str, slug: str, detail: str, *, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 problem response that closes the connection, for answers written
    before (or without) aiohttp: the request was never parsed."""
    body = orjson.dumps(
        {"type": PROBLEM_TYPE_BASE + slug, "title": reason, "status": status, "detail": detail}
    )
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/problem+json",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *([f"Retry-After: {retry_after}"] if retry_after is not None else []),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GuardedProtocol(asyncio.Protocol):
    """One connection: aiohttp's protocol inside, the guard's deadline and count around it."""

    def __init__(self, guard: ConnectionGuard, make_inner: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_inner = make_inner
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._in_request = False

    # --- what the guard and the middleware call -----------------------------------------------

    def request_started(self) -> None:
        """The request's headers are in: its deadline no longer applies."""
        self._in_request = True
        self._disarm()

    def request_finished(self) -> None:
        """The next request's deadline starts with its first byte."""
        self._in_request = False

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._guard.admit(transport, self):
            transport.write(
                raw_problem(
                    503,
                    "Service Unavailable",
                    "too-many-connections",
                    "the API holds as many connections as it may (HTTP_MAX_CONNECTIONS); try again",
                    retry_after=1,
                )
            )
            transport.close()
            return
        self._arm()
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if not self._in_request and self._deadline is None:
            self._arm()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._inner is not None:
            self._guard.release(self._transport)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # --- the header deadline -------------------------------------------------------------------

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._guard.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._transport is None or self._transport.is_closing():
            return
        self._guard.closed("header_timeout")
        self._transport.write(
            raw_problem(
                408,
                "Request Timeout",
                "request-timeout",
                f"the request line and headers did not arrive within {self._guard.header_timeout:g} s",
            )
        )
        self._transport.close()


class ConnectionGuard:
    """The API's open connections, by transport, with the header deadline and the cap."""

    def __init__(self, *, header_timeout: float, max_connections: int, metrics: ApiMetrics) -> None:
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self._metrics = metrics
        self._open: dict[asyncio.BaseTransport, GuardedProtocol] = {}

    @classmethod
    def from_settings(cls, settings: Settings, metrics: ApiMetrics) -> ConnectionGuard:
        return cls(
            header_timeout=settings.http_header_timeout,
            max_connections=settings.http_max_connections,
            metrics=metrics,
        )

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def protocol_factory(self, make_inner: Callable[[], asyncio.Protocol]) -> Callable[[], GuardedProtocol]:
        """What ``loop.create_server`` takes: aiohttp's protocol factory, guarded."""
        return lambda: GuardedProtocol(self, make_inner)

    def admit(self, transport: asyncio.BaseTransport, protocol: GuardedProtocol) -> bool:
        """Count the new connection in, or say it is one too many."""
        if len(self._open) >= self.max_connections:
            self.closed("over_capacity")
            return False
        self._open[transport] = protocol
        return True

    def release(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None:
            self._open.pop(transport, None)

    def of(self, transport: asyncio.BaseTransport | None) -> GuardedProtocol | None:
        """The guard of the connection ``transport`` belongs to, if it is one of ours."""
        return self._open.get(transport) if transport is not None else None

    def closed(self, reason: str) -> None:
        self._metrics.connections_closed.labels(reason).inc()
        log.info("connection closed by the guard", extra={"reason": reason})
