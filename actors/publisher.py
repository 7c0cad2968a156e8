"""Publishing Dramatiq messages from an event loop, each awaited until RabbitMQ confirms it.

One pika ``AsyncioConnection`` on the caller's loop carries one channel in confirm mode. Many
publishes are in flight on it at once: RabbitMQ numbers the messages of a confirm-mode channel
1, 2, 3... (delivery tags) and later acks or nacks them, singly or "up to and including N". Each
publish keeps a future under its tag, and a confirm settles the futures it covers.

The bytes and properties are exactly those of ``RabbitmqBroker.enqueue`` (no delay), and the
queue is declared by the broker itself, so workers cannot tell these messages from ``send()``'s.
Queue depths (for /metrics and /readyz) are read over the same connection, with passive declares
on a short-lived second channel, so a scrape never opens a connection of its own.
Every failure (refused, reset, unroutable, nacked, closed, too slow) is a ``QueueUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pika.exceptions
import pika.spec
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from pika.adapters.asyncio_connection import AsyncioConnection, _AsyncioIOServicesAdapter
from pika.adapters.utils.nbio_interface import AbstractIOReference

from actors.broker import connection_name as process_connection_name
from service.errors import QueueUnavailable

log = logging.getLogger(__name__)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _IOServices(_AsyncioIOServicesAdapter):  # type: ignore[misc]  # pika is untyped here
    """pika's asyncio I/O services, except that a TCP connection which cannot be made a transport
    fails the connection attempt the way every other failure does.

    pika raises ValueError from ``create_streaming_connection`` when the peer reset the TCP
    connection between connect and transport set-up (``getpeername()`` fails). It raises inside an
    event-loop callback, so the exception only reaches asyncio's handler and the connection
    workflow never finishes: neither the open nor the open-error callback comes, and a publish
    waited for its whole timeout instead of failing at once. Here the error is handed to the
    workflow's own ``on_done``, on the next loop turn, as an asynchronous failure would be.
    """

    def create_streaming_connection(
        self,
        protocol_factory: Callable[[], Any],
        sock: socket.socket,
        on_done: Callable[[Any], None],
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> AbstractIOReference:
        try:
            reference: AbstractIOReference = super().create_streaming_connection(
                protocol_factory, sock, on_done, ssl_context=ssl_context, server_hostname=server_hostname
            )
        except Exception as exc:  # pika has closed the socket already
            error = exc
            return self.call_later(0, lambda: on_done(error))
        return reference


class _Unconfirmed:
    """The publishes of one confirm-mode channel still waiting for RabbitMQ's word, by delivery tag.

    RabbitMQ numbers a confirm-mode channel's messages 1, 2, 3... and acks or nacks each tag, or
    with ``multiple`` every tag up to and including it. The futures are added in tag order, so the
    dict's first keys are always the oldest.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._by_tag: dict[int, tuple[asyncio.Future[None], bytes]] = {}
        self._next_tag = 1

    def __len__(self) -> int:
        return len(self._by_tag)

    def add(self, body: bytes) -> asyncio.Future[None]:
        """Register the message just published (the channel's next tag)."""
        confirmed: asyncio.Future[None] = self._loop.create_future()
        self._by_tag[self._next_tag] = (confirmed, body)
        self._next_tag += 1
        return confirmed

    def confirm(self, tag: int, *, multiple: bool, acked: bool) -> None:
        """basic.ack (``acked``) or basic.nack of ``tag``, or of every tag up to it (``multiple``;
        a tag of 0 with multiple means every outstanding one)."""
        if not multiple:
            entry = self._by_tag.pop(tag, None)
            if entry is not None:
                self._confirm(entry[0], acked)
            return
        while self._by_tag:
            oldest = next(iter(self._by_tag))
            if tag and oldest > tag:
                break
            self._confirm(self._by_tag.pop(oldest)[0], acked)

    def returned(self, body: bytes, error: QueueUnavailable) -> bool:
        """basic.return of an unroutable message. It names no tag, but a message's body holds its
        unique message_id; its ack follows and finds the future already settled."""
        for confirmed, sent in self._by_tag.values():
            if sent == body and not confirmed.done():
                _settle(confirmed, error)
                return True
        return False

    def fail_all(self, reason: str) -> int:
        """The channel is gone: no confirm will come for any of them."""
        waiting, self._by_tag = self._by_tag, {}
        for confirmed, _ in waiting.values():
            _settle(confirmed, QueueUnavailable(f"RabbitMQ connection lost before the confirm: {reason}"))
        return len(waiting)

    @staticmethod
    def _confirm(confirmed: asyncio.Future[None], acked: bool) -> None:
        _settle(confirmed, None if acked else QueueUnavailable("RabbitMQ refused the message (basic.nack)"))


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # cancelled: its publish gave up waiting
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
        future.exception()  # mark it retrieved: nobody may be waiting any more


class _Link:
    """One connection and its confirm-mode channel. It dies whole: when it closes, for whatever
    reason, every publish still waiting on it fails, and the next publish opens another link."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, parameters: pika.URLParameters, timeout: float
    ) -> None:
        self.loop = loop
        #: Settles once the channel is in confirm mode (or the link failed before that).
        self.ready: asyncio.Future[None] = loop.create_future()
        #: Settles once the connection is closed, however that happened.
        self.finished: asyncio.Future[None] = loop.create_future()
        self.dead = False
        #: The queues a publish on this link came back unroutable from (basic.return).
        self.unroutable: set[str] = set()
        self._unconfirmed = _Unconfirmed(loop)
        self._channel: Any = None
        self._timeout = timeout
        self._connection = AsyncioConnection(
            parameters,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_error,
            on_close_callback=self._on_connection_error,
            custom_ioloop=_IOServices(loop),
        )
        # Opening gets the same bound as a publish: a stuck handshake must not hold the link.
        self._give_up = loop.call_later(timeout, self._opening_too_slow)

    def publish(
        self, routing_key: str, body: bytes, properties: pika.BasicProperties
    ) -> asyncio.Future[None]:
        """Hand one message to the channel; the future settles with RabbitMQ's confirm."""
        if self.dead or self._channel is None:
            raise QueueUnavailable("RabbitMQ connection closed")
        try:
            self._channel.basic_publish(
                exchange="", routing_key=routing_key, body=body, properties=properties, mandatory=True
            )
        except Exception as exc:
            # The channel's message count may be off now: this link cannot be trusted any more.
            self.fail(f"publish failed: {_reason(exc)}")
            raise
        if self.dead:  # writing found the connection gone (pika reported it synchronously)
            raise QueueUnavailable("RabbitMQ connection lost while publishing")
        return self._unconfirmed.add(body)

    def fail(self, reason: str) -> None:
        """Fail every waiting publish and close the connection (the next publish opens another)."""
        if not self.dead:
            self._die(reason)
        try:
            if not (self._connection.is_closing or self._connection.is_closed):
                self._connection.close(reply_text=reason[:200])
        except Exception:  # a connection in a state pika cannot close from: it is dead anyway
            log.debug("closing a failed RabbitMQ connection raised", exc_info=True)
            _settle(self.finished, None)

    def _die(self, reason: str) -> None:
        self.dead = True
        self._give_up.cancel()
        _settle(self.ready, QueueUnavailable(f"RabbitMQ connection failed: {reason}"))
        self._unconfirmed.fail_all(reason)

    async def depths(self, queue_names: Sequence[str]) -> dict[str, int]:
        """Messages ready in each queue (0 for a queue that does not exist), read with passive
        declares on a channel of its own on this connection, closed afterwards. A declare of a
        missing queue closes the channel (404), so the next name gets a new one."""
        depths: dict[str, int] = {}
        channel: Any = None
        closed: asyncio.Future[BaseException] | None = None
        try:
            for name in queue_names:
                if channel is None:
                    channel, closed = await self._open_side_channel()
                assert closed is not None
                declared: asyncio.Future[int] = self.loop.create_future()

                def answered(frame: Any, declared: asyncio.Future[int] = declared) -> None:
                    if not declared.done():
                        declared.set_result(frame.method.message_count)

                channel.queue_declare(queue=name, passive=True, callback=answered)
                await self._first_of(declared, closed)
                if declared.done():
                    depths[name] = declared.result()
                    continue
                error = closed.result()
                if not (isinstance(error, pika.exceptions.ChannelClosedByBroker) and error.reply_code == 404):
                    raise QueueUnavailable(f"RabbitMQ queue declaration failed: {_reason(error)}")
                depths[name] = 0
                channel = None
        finally:
            if channel is not None and channel.is_open:
                channel.close()
        return depths

    async def _open_side_channel(self) -> tuple[Any, asyncio.Future[BaseException]]:
        """A new channel on this connection, and a future that settles with why it closed."""
        opened: asyncio.Future[Any] = self.loop.create_future()
        closed: asyncio.Future[BaseException] = self.loop.create_future()

        def on_close(channel: Any, error: BaseException) -> None:
            if not closed.done():
                closed.set_result(error)

        def on_open(channel: Any) -> None:
            channel.add_on_close_callback(on_close)
            if not opened.done():
                opened.set_result(channel)

        if self.dead:
            raise QueueUnavailable("RabbitMQ connection closed")
        self._connection.channel(on_open_callback=on_open)
        await self._first_of(opened)
        return opened.result(), closed

    async def _first_of(self, *futures: asyncio.Future[Any]) -> None:
        """Wait until one of ``futures`` settles; QueueUnavailable if the connection ends first."""
        await asyncio.wait([*futures, self.finished], return_when=asyncio.FIRST_COMPLETED)
        if not any(future.done() for future in futures):
            raise QueueUnavailable("RabbitMQ connection lost while reading queue depths")

    # pika's callbacks (they run on the loop and must not raise) ---------------------------------

    def _opening_too_slow(self) -> None:
        if not self.ready.done():
            self.fail(f"not open within {self._timeout:g} s")

    def _on_connection_open(self, connection: Any) -> None:
        if not self.dead:
            connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        if self.dead:
            return
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, frame: Any) -> None:
        self._give_up.cancel()
        if not self.dead:
            _settle(self.ready, None)

    def _on_connection_error(self, connection: Any, error: BaseException) -> None:
        """Opening failed, or an open connection closed (by us, the broker or the network)."""
        if not self.dead:
            if len(self._unconfirmed):
                log.warning(
                    "RabbitMQ publishing connection lost; its unconfirmed messages fail",
                    extra={"unconfirmed": len(self._unconfirmed), "reason": _reason(error)},
                )
            self._die(_reason(error))
        _settle(self.finished, None)

    def _on_channel_closed(self, channel: Any, error: BaseException) -> None:
        # A channel error (a broker-side precondition, say) ends the link: close the connection too.
        self.fail(f"channel closed: {_reason(error)}")

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        self._unconfirmed.confirm(
            method.delivery_tag, multiple=method.multiple, acked=isinstance(method, pika.spec.Basic.Ack)
        )

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        """An unroutable message: its queue is gone (deleted since it was declared)."""
        self.unroutable.add(method.routing_key)
        self._unconfirmed.returned(
            body,
            QueueUnavailable(
                f"RabbitMQ returned the message as unroutable: {method.reply_code} {method.reply_text} "
                f"(queue {method.routing_key!r})"
            ),
        )


class Publisher:
    """Publishes Dramatiq messages over one confirm-mode channel on the running event loop.

    The connection opens on the first publish (concurrent publishes share the opening) and again
    after it closes. ``publish`` returns once RabbitMQ has confirmed the message, or raises
    ``QueueUnavailable`` within ``timeout`` seconds. Use it from one event loop; ``close`` it
    on that loop.
    """

    def __init__(
        self, broker: RabbitmqBroker, url: str, *, timeout: float, connection_name: str | None = None
    ) -> None:
        self._broker = broker
        self._timeout = timeout
        parameters = pika.URLParameters(url)
        parameters.socket_timeout = timeout
        parameters.stack_timeout = timeout
        # RabbitMQ blocks publishers under a memory or disk alarm: that is "unavailable" too.
        parameters.blocked_connection_timeout = timeout
        name = connection_name or process_connection_name("publisher")
        parameters.client_properties = {"connection_name": name}
        self._parameters = parameters
        self._link: _Link | None = None
        self._declared: set[str] = set()
        self._declaring: dict[str, asyncio.Future[None]] = {}
        self._closed = False

    async def publish(self, message: Message[Any]) -> None:
        """Publish ``message`` as ``RabbitmqBroker.enqueue`` would, and wait for RabbitMQ's confirm."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        link: _Link | None = None
        try:
            async with asyncio.timeout_at(deadline):
                link = await self._ready(message.queue_name)
                self._broker.emit_before("enqueue", message, None)
                confirmed = link.publish(
                    message.queue_name,
                    message.encode(),
                    pika.BasicProperties(delivery_mode=2, priority=message.options.get("broker_priority")),
                )
                await confirmed
        except QueueUnavailable:
            if link is not None and message.queue_name in link.unroutable:
                link.unroutable.discard(message.queue_name)
                self._forget_declared(message.queue_name)
            raise
        except Exception as exc:
            # Whatever pika or the network raises (AMQPError, OSError, even ValueError from a reset
            # handshake) means "not published"; the caller's job row stays the truth.
            raise self._unavailable("publish", link, exc) from exc
        self._broker.emit_after("enqueue", message, None)

    async def queue_depths(self, queue_names: Sequence[str]) -> dict[str, int]:
        """Messages ready in each queue (0 for one not declared yet), read over the publishing
        connection (a short-lived channel, no connection of its own): a round trip to the broker
        within ``timeout``, or ``QueueUnavailable``."""
        link: _Link | None = None
        try:
            async with asyncio.timeout(self._timeout):
                link = await self._open_link()
                return await link.depths(queue_names)
        except QueueUnavailable:
            raise
        except Exception as exc:
            raise self._unavailable("queue depth read", link, exc) from exc

    def _unavailable(self, what: str, link: _Link | None, exc: Exception) -> QueueUnavailable:
        """The QueueUnavailable for a call that raised ``exc``. A call that timed out on an open
        link ends that link, rather than let every next call wait on it too (a half-open TCP
        connection is otherwise noticed only by heartbeats)."""
        if not isinstance(exc, TimeoutError):
            return QueueUnavailable(f"RabbitMQ {what} failed: {_reason(exc)}")
        if link is not None and link.ready.done():
            link.fail(f"no answer within {self._timeout:g} s")
        return QueueUnavailable(f"RabbitMQ {what} timed out after {self._timeout:g} s")

    async def close(self) -> None:
        """Fail publishes still waiting, close the connection; later publishes fail at once."""
        self._closed = True
        link, self._link = self._link, None
        if link is None:
            return
        link.fail("publisher closed")
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(link.finished)
        except TimeoutError:
            log.warning("RabbitMQ publishing connection did not close in time")

    async def _ready(self, queue_name: str) -> _Link:
        """The queue declared and an open link, sharing work with concurrent publishes."""
        if self._closed:
            raise QueueUnavailable("publisher closed")
        if queue_name not in self._declared:
            await self._declare(queue_name)
        return await self._open_link()

    async def _open_link(self) -> _Link:
        """The open link, opening one if there is none (concurrent callers share the opening)."""
        if self._closed:
            raise QueueUnavailable("publisher closed")
        # A publish may join an opening that began before it (a concurrent publish's, or that of a
        # publish which has already timed out). If that opening fails, this publish has not had a
        # try of its own yet: it opens one more link, within its own deadline, and gives up only
        # if that one fails too.
        retried = False
        while True:
            joined = False
            link = self._link
            if link is None or link.dead:
                link = self._link = _Link(asyncio.get_running_loop(), self._parameters, self._timeout)
            elif link.loop is not asyncio.get_running_loop():
                raise QueueUnavailable("publisher used from another event loop than its connection's")
            elif not link.ready.done():
                joined = True
            try:
                await asyncio.shield(link.ready)
            except QueueUnavailable as exc:
                if joined and not retried and not self._closed:
                    retried = True
                    continue
                # The failure is shared by every publish that waited for this opening: raise a copy
                # each, so concurrent tasks do not all grow one exception's traceback.
                raise QueueUnavailable(str(exc)) from None
            if self._closed:
                raise QueueUnavailable("publisher closed")
            return link

    async def _declare(self, queue_name: str) -> None:
        """``broker.declare_queue(name, ensure=True)`` once, in a thread (it is blocking): the
        queue with its .DQ and .XQ, with exactly Dramatiq's arguments."""
        declaring = self._declaring.get(queue_name)
        if declaring is None:
            declaring = asyncio.ensure_future(asyncio.to_thread(self._declare_blocking, queue_name))
            self._declaring[queue_name] = declaring

            def done(task: asyncio.Future[None]) -> None:
                del self._declaring[queue_name]
                if not task.cancelled() and task.exception() is None:
                    self._declared.add(queue_name)

            declaring.add_done_callback(done)
        try:
            await asyncio.shield(declaring)
        except Exception as exc:  # shared by concurrent publishes, as in _ready
            raise QueueUnavailable(f"RabbitMQ queue declaration failed: {_reason(exc)}") from None

    def _declare_blocking(self, queue_name: str) -> None:
        broker = self._broker
        had_connection = getattr(broker.state, "connection", None) is not None
        try:
            broker.declare_queue(queue_name, ensure=True)
        finally:
            if not had_connection:
                # Close the blocking connection the declaration opened in this (pool) thread:
                # nothing would service its heartbeats.
                del broker.connection

    def _forget_declared(self, queue_name: str) -> None:
        """The queue is gone (a publish came back unroutable): declare it again before the next
        publish, as ``RabbitmqBroker.enqueue`` does."""
        self._declared.discard(queue_name)
        self._broker.queues_pending.add(queue_name)
