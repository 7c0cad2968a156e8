"""The scheduler sends every periodic tick each interval, on a stub broker (no RabbitMQ)."""

from __future__ import annotations

import threading

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import DramatiqError

from actors.scheduler import run_scheduler
from actors.tasks import TICK_TIME_LIMIT_MS, Actors, declare_actors
from service.settings import Settings

TICKS = {
    "expire_exports",
    "sweep_exports",
    "prune_rollups",
    "run_schedules",
    "dispatch_webhooks",
    "restate_exports",
}


class OneInterval(threading.Event):
    """A stop event that ends the scheduler after its first round of ticks."""

    def wait(self, timeout: float | None = None) -> bool:
        self.set()
        return True


@pytest.fixture
def broker() -> StubBroker:
    return StubBroker()


@pytest.fixture
def actors(broker: StubBroker) -> Actors:
    return declare_actors(broker, Settings(export_worker_interval=30), context=None)


def sent(broker: StubBroker) -> list[str]:
    queue = broker.queues[Settings().queue_name]
    names = []
    while not queue.empty():
        names.append(Message.decode(queue.get_nowait()).actor_name)
    return names


def test_each_interval_sends_every_tick_once(broker: StubBroker, actors: Actors) -> None:
    run_scheduler(actors, 30, OneInterval())
    assert sorted(sent(broker)) == sorted(TICKS)


@pytest.mark.parametrize(
    "error",
    [
        DramatiqError("broker unavailable"),
        # What pika raises when the connection is reset mid-handshake (seen in the fault suite,
        # where it ended the scheduler process)
        ValueError("Expected connected socket, but getpeername() failed: error=OSError(107)"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
)
def test_a_tick_that_cannot_be_sent_does_not_stop_the_others(
    broker: StubBroker, actors: Actors, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def refuse() -> None:
        raise error

    monkeypatch.setattr(actors.expire_exports, "send", refuse)
    run_scheduler(actors, 30, OneInterval())
    assert sorted(sent(broker)) == sorted(TICKS - {"expire_exports"})


@pytest.mark.parametrize("tick", sorted(TICKS))
def test_every_tick_is_never_retried_dropped_when_stale_and_time_limited(actors: Actors, tick: str) -> None:
    options = getattr(actors, tick).options
    assert options["max_retries"] == 0
    assert options["max_age"] == 60_000  # two intervals of 30 s
    assert options["time_limit"] == TICK_TIME_LIMIT_MS
    assert getattr(actors, tick).queue_name == Settings().queue_name
