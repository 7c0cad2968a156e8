"""``JobQueue`` on Dramatiq: publishing on the event loop with confirms, failures as QueueUnavailable."""

from __future__ import annotations

import uuid

from dramatiq import Actor
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name

from actors.publisher import Publisher
from service.errors import QueueUnavailable

#: How long a publish or a ping may take before the caller treats the broker as unavailable.
BROKER_TIMEOUT_SECONDS = 5.0


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
        self._publisher = Publisher(broker, rabbitmq_url, timeout=BROKER_TIMEOUT_SECONDS)

    async def enqueue_export(self, job_id: uuid.UUID) -> None:
        await self.send(self._actor, str(job_id))

    async def send(self, actor: Actor[..., None], *args: object) -> None:
        """Send a message to ``actor`` (on this queue's broker), confirmed by RabbitMQ."""
        # Any failure to publish means "not published": refused, reset, unroutable, nacked, timed
        # out, but also pika's ValueError for a socket reset mid-handshake. The rows in the
        # database stay the truth (a job, a delivery) and a tick publishes them later, so none of
        # them may become a 500.
        try:
            message = actor.message(*args)
        except Exception as exc:
            raise QueueUnavailable(f"RabbitMQ publish failed: {type(exc).__name__}: {exc}") from exc
        await self._publisher.publish(message)  # raises only QueueUnavailable

    async def ping(self) -> None:
        """A round trip to RabbitMQ over the publishing connection (opened if it is not), within
        the broker timeout: a connection that only looks open on a dead network fails it."""
        await self._publisher.queue_depths([self._queue])

    async def depths(self) -> dict[str, int]:
        """Messages ready in the export queue, its delay queue and its dead-letter queue (a queue
        not declared yet holds 0). Read over the publishing connection: a scrape opens a channel,
        never a connection."""
        return await self._publisher.queue_depths([self._queue, dq_name(self._queue), xq_name(self._queue)])

    async def close(self) -> None:
        await self._publisher.close()
