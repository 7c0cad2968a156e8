"""The port through which the service hands work to workers; ``actors/`` implements it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from service.errors import QueueUnavailable

log = logging.getLogger(__name__)


class JobQueue(Protocol):
    async def enqueue_export(self, job_id: uuid.UUID) -> None:
        """Ask a worker to run the export; raises QueueUnavailable if the broker refuses."""

    async def ping(self) -> None:
        """Raise QueueUnavailable unless the broker is reachable."""

    async def depths(self) -> dict[str, int]:
        """Messages waiting in each of the export queues (by queue name); raises
        QueueUnavailable unless the broker answers."""


async def hand_over(
    queue: JobQueue,
    mark_enqueued: Callable[[uuid.UUID], Awaitable[None]],
    job_id: uuid.UUID,
    what: str,
    ctx: Mapping[str, object],
) -> bool:
    """Publish a stored job and record it published. False (logged with ``ctx``) when the broker
    refused: the job row stays, and the sweep publishes it later."""
    try:
        await queue.enqueue_export(job_id)
    except QueueUnavailable as exc:
        log.warning(
            f"{what} stored but not enqueued; the sweep will retry", extra={**ctx, "reason": str(exc)}
        )
        return False
    await mark_enqueued(job_id)
    return True
