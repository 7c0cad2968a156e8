"""The RabbitMQ broker, configured once per process."""

from __future__ import annotations

import logging
import os
import socket

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import current_millis
from dramatiq.middleware import AgeLimit, AsyncIO, SkipMessage, default_middleware

from service.settings import Settings

log = logging.getLogger(__name__)


class DropStale(AgeLimit):
    """Dramatiq's AgeLimit without the dead letter: a message older than its actor's ``max_age``
    is acknowledged and dropped, with a log line.

    Only the periodic ticks have a ``max_age``, and a stale tick is superseded by the next one: it
    is not a failure. AgeLimit would fail it into the dead-letter queue, where every worker outage
    longer than two intervals would leave ticks for the dead-letter alert to page on.
    """

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        actor = broker.get_actor(message.actor_name)
        max_age = message.options.get("max_age") or actor.options.get("max_age", self.max_age)
        if max_age and current_millis() - message.message_timestamp >= max_age:
            log.info(
                "dropped a stale message",
                extra={"actor": message.actor_name, "message_id": message.message_id, "max_age_ms": max_age},
            )
            raise SkipMessage("older than its max_age")


def connection_name(role: str) -> str:
    """How this process's RabbitMQ connections are named in the management console."""
    return f"analytics-exports {role} {socket.gethostname()}:{os.getpid()}"


def create_broker(settings: Settings, role: str | None = None) -> RabbitmqBroker:
    """The broker for one process; ``role`` (api, worker, scheduler) names its connections in
    the RabbitMQ console, instead of a bare client address."""
    # confirm_delivery: send() returns only once RabbitMQ has the message, so a 202 means queued
    # (or, if the broker is down, stored and left to the sweep).
    middleware = [DropStale() if kind is AgeLimit else kind() for kind in default_middleware]
    broker = RabbitmqBroker(url=settings.rabbitmq_url, confirm_delivery=True, middleware=middleware)
    if role is not None:
        parameters = broker.parameters if isinstance(broker.parameters, list) else [broker.parameters]
        for each in parameters:
            each.client_properties = {"connection_name": connection_name(role)}
    broker.add_middleware(AsyncIO())
    return broker
