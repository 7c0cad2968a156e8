"""The actors: each takes ids (or nothing) and awaits one service call."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import dramatiq
from dramatiq import Actor, Broker

from actors.context import WorkerContext
from actors.queue import DramatiqJobQueue
from service.settings import Settings

#: Below RabbitMQ's consumer_timeout (30 min by default), so the broker never closes the channel
#: under a running export and redelivers it while it still runs.
EXPORT_TIME_LIMIT_MS = 20 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Actors:
    run_export: Actor[[str], None]
    expire_exports: Actor[[], None]
    requeue_stale_exports: Actor[[], None]


def declare_actors(broker: Broker, settings: Settings, context: WorkerContext | None) -> Actors:
    """Declare the actors on ``broker``. Processes that only send (API, scheduler) pass no context."""

    def resources_of(ctx: WorkerContext | None) -> WorkerContext:
        if ctx is None:
            raise RuntimeError("actors run only in a worker process")
        return ctx

    # Failures are recorded on the job by the exporter itself; a redelivered or duplicate message
    # finds the job already claimed and does nothing, so Dramatiq's own retries stay off.
    @dramatiq.actor(
        broker=broker,
        queue_name=settings.queue_name,
        actor_name="run_export",
        max_retries=0,
        time_limit=EXPORT_TIME_LIMIT_MS,
    )
    async def run_export(job_id: str) -> None:
        resources = await resources_of(context).resources()
        await resources.exporter.run(uuid.UUID(job_id))

    # Periodic ticks: a tick older than two intervals is dropped rather than run late.
    tick_age_ms = int(settings.export_worker_interval * 2000)

    @dramatiq.actor(
        broker=broker,
        queue_name=settings.queue_name,
        actor_name="expire_exports",
        max_retries=0,
        max_age=tick_age_ms,
        time_limit=5 * 60 * 1000,
    )
    async def expire_exports() -> None:
        resources = await resources_of(context).resources()
        await resources.housekeeper.expire_due()

    @dramatiq.actor(
        broker=broker,
        queue_name=settings.queue_name,
        actor_name="requeue_stale_exports",
        max_retries=0,
        max_age=tick_age_ms,
        time_limit=5 * 60 * 1000,
    )
    async def requeue_stale_exports() -> None:
        resources = await resources_of(context).resources()
        queue = DramatiqJobQueue(run_export, settings.rabbitmq_url)
        try:
            await resources.housekeeper.requeue_stale(
                queue, unpublished_after=settings.export_worker_interval
            )
        finally:
            queue.close()

    return Actors(run_export, expire_exports, requeue_stale_exports)
