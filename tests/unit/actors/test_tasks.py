"""The actors' edges when the worker cannot do the work now: a database outage or a shutdown sends
an export message back (counted by reason) instead of failing it, and skips a tick (counted) instead
of dead-lettering it. Any other error still fails, so a real bug is not hidden."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.asyncio import EventLoopThread, set_event_loop_thread
from dramatiq.brokers.stub import StubBroker

from actors.context import Resources, WorkerContext
from actors.tasks import Actors, declare_actors
from service.errors import DatabaseUnavailable
from service.settings import Settings

INTERVAL = 30.0


@pytest.fixture(autouse=True)
def loop_thread() -> Iterator[None]:
    """The event-loop thread Dramatiq's AsyncIO middleware gives a worker: async actors run on it."""
    thread = EventLoopThread(logging.getLogger("test"))
    thread.start(timeout=5)
    set_event_loop_thread(thread)
    yield
    set_event_loop_thread(None)
    thread.stop()


class Context(WorkerContext):
    """A worker context whose resources fail with ``error`` (and counts how often it was asked)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(Settings(export_worker_interval=INTERVAL))
        self.error = error
        self.asked = 0

    async def resources(self) -> Resources:
        self.asked += 1
        raise self.error


def declared(context: Context) -> Actors:
    return declare_actors(StubBroker(), context.settings, context)


def sample(context: Context, name: str, **labels: str) -> float:
    value = context.metrics.registry.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


def test_an_export_that_cannot_claim_its_job_for_want_of_the_database_comes_back_an_interval_later() -> None:
    context = Context(DatabaseUnavailable("connection refused"))
    with pytest.raises(dramatiq.Retry) as sent_back:
        declared(context).run_export.fn(str(uuid.uuid4()))
    assert sent_back.value.delay == INTERVAL * 1000
    assert sample(context, "exports_messages_deferred_total", reason="database_unavailable") == 1
    assert sample(context, "exports_messages_deferred_total", reason="shutting_down") == 0


def test_an_export_that_arrives_while_the_worker_drains_goes_back_untouched() -> None:
    context = Context(AssertionError("a draining worker must not open its resources"))
    context.draining = True
    with pytest.raises(dramatiq.Retry):
        declared(context).run_export.fn(str(uuid.uuid4()))
    assert context.asked == 0
    assert sample(context, "exports_messages_deferred_total", reason="shutting_down") == 1


def test_any_other_error_of_an_export_is_not_sent_back() -> None:
    context = Context(RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        declared(context).run_export.fn(str(uuid.uuid4()))
    assert sample(context, "exports_messages_deferred_total", reason="database_unavailable") == 0


@pytest.mark.parametrize(
    ("actor", "tick"), [("expire_exports", "expire"), ("sweep_exports", "sweep"), ("prune_rollups", "prune")]
)
def test_a_tick_the_database_stops_is_skipped_and_counted(
    actor: str, tick: str, caplog: pytest.LogCaptureFixture
) -> None:
    context = Context(DatabaseUnavailable("connection refused"))
    run: Any = getattr(declared(context), actor)
    with caplog.at_level(logging.WARNING, logger="actors.tasks"):
        assert run.fn() is None  # returns: acknowledged, not retried or dead-lettered
    assert context.asked == 1
    assert sample(context, "exports_housekeeping_ticks_skipped_total", tick=tick) == 1
    assert [r.tick for r in caplog.records if r.getMessage().startswith("tick skipped")] == [tick]  # type: ignore[attr-defined]


def test_a_tick_that_fails_otherwise_still_fails() -> None:
    context = Context(RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        declared(context).expire_exports.fn()
    assert sample(context, "exports_housekeeping_ticks_skipped_total", tick="expire") == 0
