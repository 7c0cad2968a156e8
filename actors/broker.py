"""The RabbitMQ broker, configured once per process."""

from __future__ import annotations

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import AsyncIO

from service.settings import Settings


def create_broker(settings: Settings) -> RabbitmqBroker:
    # confirm_delivery: send() returns only once RabbitMQ has the message, so a 202 means queued
    # (or, if the broker is down, stored and left to the sweep).
    broker = RabbitmqBroker(url=settings.rabbitmq_url, confirm_delivery=True)
    broker.add_middleware(AsyncIO())
    return broker
