"""The broker's middleware: stale ticks are dropped, not dead-lettered."""

from __future__ import annotations

import os
import socket

import dramatiq
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis
from dramatiq.middleware import AgeLimit

from actors.broker import DropStale, create_broker
from service.settings import Settings


def drain(broker: StubBroker) -> None:
    """Run a worker until the ``exports`` queue is empty."""
    worker = Worker(broker, worker_timeout=50)
    worker.start()
    try:
        broker.join("exports", fail_fast=False)
        worker.join()
    finally:
        worker.stop()


def test_a_stale_tick_is_dropped_without_a_dead_letter() -> None:
    # Given a broker with DropStale, and a tick actor with a max_age
    broker = StubBroker(middleware=[DropStale()])
    ran: list[str] = []

    @dramatiq.actor(broker=broker, queue_name="exports", actor_name="tick", max_age=1000)
    def tick(label: str) -> None:
        ran.append(label)

    # When one tick waited longer than its max_age and another is fresh
    stale = tick.message("stale").copy(message_timestamp=current_millis() - 5000)
    broker.enqueue(stale)
    tick.send("fresh")
    drain(broker)
    # Then only the fresh one ran, and nothing went to the dead-letter queue
    assert ran == ["fresh"]
    assert broker.dead_letters == []


def test_dramatiqs_own_age_limit_would_have_dead_lettered_it() -> None:
    # The reason DropStale exists: with AgeLimit the same stale tick lands in the dead letters
    broker = StubBroker(middleware=[AgeLimit()])

    @dramatiq.actor(broker=broker, queue_name="exports", actor_name="tick", max_age=1000)
    def tick() -> None:
        raise AssertionError("a stale tick must not run")

    broker.enqueue(tick.message().copy(message_timestamp=current_millis() - 5000))
    drain(broker)
    assert len(broker.dead_letters) == 1


def test_the_service_broker_uses_drop_stale_instead_of_age_limit() -> None:
    broker = create_broker(Settings())
    kinds = [type(m) for m in broker.middleware]
    assert DropStale in kinds
    assert AgeLimit not in kinds
    broker.close()


def test_a_role_names_the_broker_connections_for_the_rabbitmq_console() -> None:
    broker = create_broker(Settings(), "worker")
    try:
        assert broker.parameters.client_properties == {
            "connection_name": f"analytics-exports worker {socket.gethostname()}:{os.getpid()}"
        }
    finally:
        broker.close()
