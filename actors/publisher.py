"""Publishing Dramatiq messages from an event loop with aio-pika, each awaited until RabbitMQ
confirms it.

One aio-pika connection on the caller's loop, named for the management console, carries one
channel with publisher confirms; many publishes are in flight on it at once. Each message is
published ``mandatory``: an unroutable one (its queue deleted) comes back as a failure, and its
queue is declared again before the next publish.

The body is exactly that of ``RabbitmqBroker.enqueue`` (no delay), persistent, and the queues are
declared with Dramatiq's arguments, so workers cannot tell these messages from
``send()``'s. Queue depths (for /metrics and /readyz) are read over the same connection, with
passive declares on a short-lived second channel, so a scrape never opens a connection of its
own.

Every failure (refused, reset, unroutable, nacked, closed, too slow) is a ``QueueUnavailable``
within ``timeout``; a connection that failed or went silent is dropped and the next call opens
another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
from dramatiq import Message
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.common import dq_name, xq_name

from actors.broker import connection_name as process_connection_name
from service.errors import QueueUnavailable

log = logging.getLogger(__name__)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def queue_arguments(broker: RabbitmqBroker, queue_name: str) -> dict[str, dict[str, Any]]:
    """The queues ``RabbitmqBroker.declare_queue`` makes for ``queue_name`` (the queue, its delay
    queue and its dead-letter queue), each with the arguments Dramatiq gives it: a queue declared
    with other arguments is refused by RabbitMQ (PRECONDITION_FAILED), which
    tests/integration/test_publisher.py checks both ways."""
    dead_letters: dict[str, Any] = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": xq_name(queue_name),
    }
    if broker.max_priority:
        dead_letters["x-max-priority"] = broker.max_priority
    return {
        queue_name: dead_letters,
        dq_name(queue_name): dead_letters,
        xq_name(queue_name): {"x-message-ttl": DEAD_MESSAGE_TTL},
    }


@dataclass
class _Link:
    """One connection and its confirm-mode channel; dropped whole when anything goes wrong."""

    connection: aio_pika.abc.AbstractConnection
    channel: aio_pika.abc.AbstractChannel

    @property
    def usable(self) -> bool:
        return not (self.connection.is_closed or self.channel.is_closed)


class Publisher:
    """Publishes Dramatiq messages over one confirm-mode channel on the running event loop.

    The connection opens on the first call (concurrent calls share the opening) and again after it
    failed. ``publish`` returns once RabbitMQ has confirmed the message, or raises
    ``QueueUnavailable`` within ``timeout`` seconds. Use it from one event loop; ``close`` it on
    that loop.
    """

    def __init__(
        self, broker: RabbitmqBroker, url: str, *, timeout: float, connection_name: str | None = None
    ) -> None:
        self._broker = broker
        self._url = url
        self._timeout = timeout
        self._connection_name = connection_name or process_connection_name("publisher")
        self._opening: asyncio.Future[_Link] | None = None
        self._declared: dict[str, asyncio.Future[None]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Connections opened so far (a new one after each failure): what tests and logs count.
        self.connections_opened = 0

    async def publish(self, message: Message[Any]) -> None:
        """Publish ``message`` as ``RabbitmqBroker.enqueue`` would, and wait for RabbitMQ's confirm."""
        queue = message.queue_name
        link: _Link | None = None
        try:
            async with asyncio.timeout(self._timeout):
                link = await self._open()
                await self._declare(link, queue)
                self._broker.emit_before("enqueue", message, None)
                await link.channel.default_exchange.publish(
                    aio_pika.Message(
                        message.encode(),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        priority=message.options.get("broker_priority"),
                        # aio-pika matches a returned message to its publish by this property
                        # (and would make one up): Dramatiq's own id, which workers ignore here.
                        message_id=message.message_id,
                    ),
                    routing_key=queue,
                    mandatory=True,
                )
        except aio_pika.exceptions.PublishError:
            # Returned unroutable: its queue is gone (deleted since it was declared), so it is
            # declared again before the next publish. The link itself is fine.
            self._declared.pop(queue, None)
            raise QueueUnavailable(f"RabbitMQ returned the message as unroutable (queue {queue!r})") from None
        except aio_pika.exceptions.DeliveryError:
            raise QueueUnavailable("RabbitMQ refused the message (basic.nack)") from None
        except QueueUnavailable:
            raise
        except Exception as exc:
            # Whatever aio-pika or the network raises means "not published"; the caller's job row
            # stays the truth. The link is no longer trusted.
            raise self._unavailable("publish", link, exc) from exc
        self._broker.emit_after("enqueue", message, None)

    async def queue_depths(self, queue_names: Sequence[str]) -> dict[str, int]:
        """Messages ready in each queue (0 for one not declared yet), read with passive declares
        on a short-lived channel of the publishing connection: a round trip to the broker within
        ``timeout``, or ``QueueUnavailable``."""
        link: _Link | None = None
        try:
            async with asyncio.timeout(self._timeout):
                link = await self._open()
                return await self._depths(link, queue_names)
        except QueueUnavailable:
            raise
        except Exception as exc:
            raise self._unavailable("queue depth read", link, exc) from exc

    async def close(self) -> None:
        """Close the connection (publishes still waiting fail); later calls fail at once."""
        self._closed = True
        opening, self._opening = self._opening, None
        if opening is not None:
            if not opening.done():
                opening.cancel()
            elif not opening.cancelled() and opening.exception() is None:
                self._drop(opening.result())
        if self._closing:
            await asyncio.wait(self._closing, timeout=self._timeout)

    # --- the link ------------------------------------------------------------------------------

    async def _open(self) -> _Link:
        """The open link, opening one if there is none (concurrent callers share the opening).

        A call may join an opening that began before it (a concurrent call's, or that of a call
        which has already timed out). If that opening fails, this call has not had a try of its
        own yet: it opens one more link, within its own deadline, and gives up only if that one
        fails too."""
        retried = False
        while True:
            if self._closed:
                raise QueueUnavailable("publisher closed")
            opening = self._opening
            joined = True
            if opening is None or (opening.done() and not self._still_open(opening)):
                opening = self._opening = asyncio.ensure_future(self._connect())
                joined = False
            elif opening.done():
                return opening.result()
            try:
                return await asyncio.shield(opening)
            except QueueUnavailable as exc:
                if joined and not retried:
                    retried = True
                    continue
                # Shared by every call that waited for this opening: a copy each, so concurrent
                # tasks do not all grow one exception's traceback.
                raise QueueUnavailable(str(exc)) from None

    @staticmethod
    def _still_open(opening: asyncio.Future[_Link]) -> bool:
        return not opening.cancelled() and opening.exception() is None and opening.result().usable

    async def _connect(self) -> _Link:
        self.connections_opened += 1
        connection: aio_pika.abc.AbstractConnection | None = None
        try:
            connection = await aio_pika.connect(
                self._url,
                timeout=self._timeout,
                client_properties={"connection_name": self._connection_name},
            )
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except asyncio.CancelledError:
            if connection is not None:
                self._close_later(connection)
            raise
        except Exception as exc:
            if connection is not None:
                self._close_later(connection)
            raise QueueUnavailable(f"RabbitMQ connection failed: {_reason(exc)}") from None
        return _Link(connection, channel)

    def _unavailable(self, what: str, link: _Link | None, exc: BaseException) -> QueueUnavailable:
        """The QueueUnavailable for a call on ``link`` that raised ``exc``. The link is dropped:
        after a timeout it may be silent (a half-open TCP connection is otherwise noticed only by
        heartbeats), after any other error it may be half broken."""
        if link is not None:
            self._drop(link)
        if isinstance(exc, TimeoutError):
            return QueueUnavailable(f"RabbitMQ {what} timed out after {self._timeout:g} s")
        return QueueUnavailable(f"RabbitMQ {what} failed: {_reason(exc)}")

    def _drop(self, link: _Link) -> None:
        opening = self._opening
        if opening is not None and opening.done() and self._still_open(opening) and opening.result() is link:
            self._opening = None
        self._close_later(link.connection)

    def _close_later(self, connection: aio_pika.abc.AbstractConnection) -> None:
        """Close ``connection`` in the background, within the timeout (a silent peer never
        answers a close); ``close`` waits for these."""

        async def close() -> None:
            try:
                async with asyncio.timeout(self._timeout):
                    await connection.close()
            except Exception as exc:  # it is being given up either way
                log.debug("closing a RabbitMQ connection failed", extra={"reason": _reason(exc)})

        task = asyncio.ensure_future(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # --- queues --------------------------------------------------------------------------------

    async def _declare(self, link: _Link, queue_name: str) -> None:
        """Dramatiq's three queues for ``queue_name``, once per publisher (again after one came
        back unroutable); concurrent publishes share the declaration."""
        declaring = self._declared.get(queue_name)
        if declaring is None or (declaring.done() and (declaring.cancelled() or declaring.exception())):
            declaring = self._declared[queue_name] = asyncio.ensure_future(self._declare_on(link, queue_name))
        await asyncio.shield(declaring)

    async def _declare_on(self, link: _Link, queue_name: str) -> None:
        for name, arguments in queue_arguments(self._broker, queue_name).items():
            await link.channel.declare_queue(name, durable=True, arguments=arguments)

    async def _depths(self, link: _Link, queue_names: Sequence[str]) -> dict[str, int]:
        """A passive declare of a missing queue closes its channel (404): the next name gets a new
        channel."""
        depths: dict[str, int] = {}
        channel: aio_pika.abc.AbstractChannel | None = None
        try:
            for name in queue_names:
                if channel is None or channel.is_closed:
                    channel = await link.connection.channel(publisher_confirms=False)
                try:
                    queue = await channel.declare_queue(name, passive=True)
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    depths[name] = 0
                    channel = None
                    continue
                depths[name] = queue.declaration_result.message_count or 0
        finally:
            if channel is not None and not channel.is_closed:
                await channel.close()
        return depths
