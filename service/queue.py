"""The port through which the service hands work to workers; ``actors/`` implements it."""

from __future__ import annotations

import uuid
from typing import Protocol


class JobQueue(Protocol):
    async def enqueue_export(self, job_id: uuid.UUID) -> None:
        """Ask a worker to run the export; raises QueueUnavailable if the broker refuses."""

    async def ping(self) -> None:
        """Raise QueueUnavailable unless the broker is reachable."""

    async def depths(self) -> dict[str, int]:
        """Messages waiting in each of the export queues (by queue name); raises
        QueueUnavailable unless the broker answers."""
