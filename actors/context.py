"""Per-worker-process resources (pool, S3 client, services), opened once on the worker's loop."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass

from dramatiq import Broker, Middleware, Worker
from dramatiq.asyncio import get_event_loop_thread

from service.exporter import Exporter
from service.housekeeping import Housekeeper
from service.repository import JobRepository, create_pool
from service.settings import Settings
from service.storage import ObjectStore, open_s3_client

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resources:
    exporter: Exporter
    housekeeper: Housekeeper


class WorkerContext(Middleware):
    """Opens resources lazily on the event-loop thread the AsyncIO middleware runs, and closes
    them at worker shutdown (after in-flight actors, before the loop stops: add it after AsyncIO)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack: AsyncExitStack | None = None
        self._resources: Resources | None = None
        self._lock: asyncio.Lock | None = None

    async def resources(self) -> Resources:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._resources is None:
                self._resources = await self._open()
        return self._resources

    async def _open(self) -> Resources:
        settings = self.settings
        stack = AsyncExitStack()
        try:
            pool = await create_pool(settings.database_url, max_size=settings.export_worker_concurrency + 2)
            stack.push_async_callback(pool.close)
            client = await stack.enter_async_context(open_s3_client(settings))
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        repository = JobRepository(pool)
        store = ObjectStore(client, settings.export_part_size)
        log.info("worker resources opened")
        return Resources(Exporter(repository, store, settings), Housekeeper(repository, store))

    async def _close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack, self._resources = None, None

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        thread = get_event_loop_thread()
        if thread is not None:
            thread.run_coroutine(self._close())
