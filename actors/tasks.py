"""The actors: each takes ids (or nothing) and awaits one service call."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dramatiq
from dramatiq import Actor, Broker

from actors.job_queue import DramatiqJobQueue
from service.errors import DatabaseUnavailable
from service.settings import Settings

if TYPE_CHECKING:  # only a worker process has a context (and loads the exporter it runs)
    from actors.context import Resources, WorkerContext

log = logging.getLogger(__name__)

#: Below RabbitMQ's consumer_timeout (30 min by default), so the broker never closes the channel
#: under a running export and redelivers it while it still runs.
EXPORT_TIME_LIMIT_MS = 20 * 60 * 1000
#: A periodic tick's work is capped in batches; this only stops a tick that hangs.
TICK_TIME_LIMIT_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Actors:
    run_export: Actor[[str], None]
    expire_exports: Actor[[], None]
    sweep_exports: Actor[[], None]
    prune_rollups: Actor[[], None]
    run_schedules: Actor[[], None]
    dispatch_webhooks: Actor[[], None]
    deliver_webhook: Actor[[str, int], None]
    restate_exports: Actor[[], None]

    @property
    def ticks(self) -> tuple[Actor[[], None], ...]:
        """What the scheduler sends every interval."""
        return (
            self.expire_exports,
            self.sweep_exports,
            self.prune_rollups,
            self.run_schedules,
            self.dispatch_webhooks,
            self.restate_exports,
        )


def _sent_back(retries: int, exc: BaseException) -> bool:
    """Dramatiq retries only messages an actor sends back on purpose (dramatiq.Retry); a job's own
    failures and retries are recorded on the job row, where the attempt count lives."""
    return isinstance(exc, dramatiq.Retry)


def declare_actors(broker: Broker, settings: Settings, context: WorkerContext | None) -> Actors:
    """Declare the actors on ``broker``. Processes that only send (API, scheduler) pass no context."""

    def worker_context() -> WorkerContext:
        if context is None:
            raise RuntimeError("actors run only in a worker process")
        return context

    # A message that could not claim its job for want of the database comes back this much later.
    retry_ms = int(settings.export_worker_interval * 1000)

    @dramatiq.actor(
        broker=broker,
        queue_name=settings.queue_name,
        actor_name="run_export",
        retry_when=_sent_back,
        time_limit=EXPORT_TIME_LIMIT_MS,
    )
    async def run_export(job_id: str) -> None:
        ctx = worker_context()
        if ctx.draining:
            ctx.metrics.deferred.labels("shutting_down").inc()
            raise dramatiq.Retry("worker shutting down: sent back for another worker", delay=1000)
        async with ctx.tracking():
            try:
                resources = await ctx.resources()
                await resources.exporter.run(uuid.UUID(job_id))
            except DatabaseUnavailable as exc:
                # The job could not be claimed, so its row is as it was. Dead-lettered, the job
                # would wait for the sweep's republish of stale messages (15 minutes): try again
                # an interval later instead, for as long as the database is away.
                ctx.metrics.deferred.labels("database_unavailable").inc()
                raise dramatiq.Retry(f"database unavailable: {exc}", delay=retry_ms) from exc
            except asyncio.CancelledError:
                if not ctx.draining:
                    raise  # the time limit: the exporter recorded it as a failed attempt
                # Handed back at shutdown: the job is pending again and the sweep publishes it.

    # Periodic ticks: a tick older than two intervals is dropped rather than run late, and none is
    # retried (the next one, an interval later, does the same work).
    tick_age_ms = int(settings.export_worker_interval * 2000)

    def periodic(actor_name: str) -> Callable[[Callable[[], Awaitable[None]]], Actor[[], None]]:
        return dramatiq.actor(
            broker=broker,
            queue_name=settings.queue_name,
            actor_name=actor_name,
            max_retries=0,
            max_age=tick_age_ms,
            time_limit=TICK_TIME_LIMIT_MS,
        )

    async def housekeep(tick: str, work: Callable[[Resources], Awaitable[object]]) -> None:
        """One tick's ``work``. A tick that PostgreSQL being away stops is skipped, not failed
        (not dead-lettered, so not paged on): every tick is idempotent and the next one does the
        same work. S3 and RabbitMQ faults never get here: each tick handles them per item
        (logged, left for the next tick)."""
        ctx = worker_context()
        try:
            await work(await ctx.resources())
        except DatabaseUnavailable as exc:
            ctx.metrics.ticks_skipped.labels(tick).inc()
            log.warning(
                "tick skipped: PostgreSQL is unavailable; the next tick does its work",
                extra={"tick": tick, "reason": str(exc)},
            )

    def publishing(
        work: Callable[[Resources, DramatiqJobQueue], Awaitable[object]],
    ) -> Callable[[Resources], Awaitable[None]]:
        """A tick's work that publishes jobs: given a queue of its own, closed after."""

        async def run(resources: Resources) -> None:
            queue = DramatiqJobQueue(run_export, settings.rabbitmq_url)
            try:
                await work(resources, queue)
            finally:
                await queue.close()

        return run

    @periodic("expire_exports")
    async def expire_exports() -> None:
        await housekeep("expire", lambda resources: resources.housekeeper.expire_due())

    @periodic("sweep_exports")
    async def sweep_exports() -> None:
        await housekeep("sweep", publishing(lambda resources, queue: resources.housekeeper.sweep(queue)))

    @periodic("prune_rollups")
    async def prune_rollups() -> None:
        await housekeep("prune", lambda resources: resources.housekeeper.prune_rollups())

    @periodic("run_schedules")
    async def run_schedules() -> None:
        await housekeep("schedules", publishing(lambda resources, queue: resources.schedules.run_due(queue)))

    @dramatiq.actor(
        broker=broker,
        queue_name=settings.queue_name,
        actor_name="deliver_webhook",
        max_retries=0,  # the delivery's row says when its next attempt is due; a tick sends it
        time_limit=int((settings.webhook_timeout + 60) * 1000),
    )
    async def deliver_webhook(delivery_id: str, attempts: int) -> None:
        await housekeep(
            "webhooks", lambda resources: resources.webhooks.deliver(uuid.UUID(delivery_id), attempts)
        )

    @periodic("dispatch_webhooks")
    async def dispatch_webhooks() -> None:
        def dispatch(resources: Resources, queue: DramatiqJobQueue) -> Awaitable[int]:
            return resources.webhooks.dispatch_due(
                lambda delivery_id, attempts: queue.send(deliver_webhook, str(delivery_id), attempts)
            )

        await housekeep("webhooks", publishing(dispatch))

    @periodic("restate_exports")
    async def restate_exports() -> None:
        await housekeep(
            "restatements", publishing(lambda resources, queue: resources.restater.check_due(queue))
        )

    return Actors(
        run_export,
        expire_exports,
        sweep_exports,
        prune_rollups,
        run_schedules,
        dispatch_webhooks,
        deliver_webhook,
        restate_exports,
    )
