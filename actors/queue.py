"""``JobQueue`` on Dramatiq: publishing on the event loop with confirms, failures as QueueUnavailable."""

from __future__ import annotations

import asyncio
import uuid

import pika
import pika.exceptions
from dramatiq import Actor
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name

from actors.publisher import Publisher
from service.errors import QueueUnavailable

#: How long a publish or a ping may take before the caller treats the broker as unavailable.
BROKER_TIMEOUT_SECONDS = 5.0


def _failure(what: str, exc: BaseException) -> QueueUnavailable:
    return QueueUnavailable(
        f"RabbitMQ {what} failed: {type(exc).__name__}: {exc}"
        if str(exc)
        else f"RabbitMQ {what} failed: {type(exc).__name__}"
    )


class DramatiqJobQueue:
    """Sends ``run_export`` messages exactly as ``actor.send`` would, but from the event loop: the
    publisher pipelines them on one confirm-mode channel and each call returns once RabbitMQ
    confirmed its message. Create it anywhere; use and ``close`` it on one running loop."""

    def __init__(self, export_actor: Actor[[str], None], rabbitmq_url: str) -> None:
        broker = export_actor.broker
        if not isinstance(broker, RabbitmqBroker):
            raise TypeError(f"DramatiqJobQueue needs a RabbitmqBroker, not {type(broker).__name__}")
        self._actor = export_actor
        self._queue = export_actor.queue_name
        self._url = rabbitmq_url
        self._publisher = Publisher(broker, rabbitmq_url, timeout=BROKER_TIMEOUT_SECONDS)

    async def enqueue_export(self, job_id: uuid.UUID) -> None:
        # Any failure to publish means "not published": refused, reset, unroutable, nacked, timed
        # out, but also pika's ValueError for a socket reset mid-handshake. The job row stays the
        # truth and the sweep publishes it later, so none of them may become a 500.
        try:
            message = self._actor.message(str(job_id))
        except Exception as exc:
            raise _failure("publish", exc) from exc
        await self._publisher.publish(message)  # raises only QueueUnavailable

    async def ping(self) -> None:
        """A fresh connection (not the publisher's, which may look open on a dead network)."""

        def connect() -> None:
            params = pika.URLParameters(self._url)
            params.socket_timeout = BROKER_TIMEOUT_SECONDS
            params.blocked_connection_timeout = BROKER_TIMEOUT_SECONDS
            pika.BlockingConnection(params).close()

        try:
            await asyncio.wait_for(asyncio.to_thread(connect), BROKER_TIMEOUT_SECONDS)
        except Exception as exc:
            raise _failure("connection", exc) from exc

    async def depths(self) -> dict[str, int]:
        """Messages ready in the export queue, its delay queue and its dead-letter queue, read
        with passive declares on a connection of their own (a queue not declared yet holds 0)."""
        names = (self._queue, dq_name(self._queue), xq_name(self._queue))

        def read() -> dict[str, int]:
            params = pika.URLParameters(self._url)
            params.socket_timeout = BROKER_TIMEOUT_SECONDS
            params.blocked_connection_timeout = BROKER_TIMEOUT_SECONDS
            connection = pika.BlockingConnection(params)
            try:
                depths = {}
                channel = connection.channel()
                for name in names:
                    try:
                        declared = channel.queue_declare(queue=name, passive=True)
                    except pika.exceptions.ChannelClosedByBroker as exc:
                        if exc.reply_code != 404:
                            raise
                        depths[name] = 0
                        channel = connection.channel()  # a refused declare closes the channel
                    else:
                        depths[name] = declared.method.message_count
                return depths
            finally:
                connection.close()

        try:
            return await asyncio.wait_for(asyncio.to_thread(read), BROKER_TIMEOUT_SECONDS)
        except Exception as exc:
            raise _failure("queue depth read", exc) from exc

    async def close(self) -> None:
        await self._publisher.close()
