"""Per-worker-process resources (pool, S3 client, services), opened once on the worker's loop,
and the worker's metrics and liveness probe, served on METRICS_PORT from boot to shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from dramatiq import Broker, Middleware, Worker
from dramatiq.asyncio import get_event_loop_thread

from actors import health
from actors.webhook_client import WebhookClient
from service.exporter import Exporter
from service.housekeeping import Housekeeper
from service.metrics import ExportMetrics
from service.repository import JobRepository, create_pool
from service.restatement import Restater
from service.scheduling import ScheduleService
from service.settings import Settings
from service.storage import ObjectStore, open_s3_client
from service.webhook_delivery import WebhookSender

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resources:
    exporter: Exporter
    housekeeper: Housekeeper
    schedules: ScheduleService
    webhooks: WebhookSender
    restater: Restater


class WorkerContext(Middleware):
    """Opens resources lazily on the event-loop thread the AsyncIO middleware runs, and closes
    them at worker shutdown (after in-flight actors, before the loop stops: add it after AsyncIO)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = ExportMetrics()
        self._metrics_server: Callable[[], None] | None = None
        self._stack: AsyncExitStack | None = None
        self._resources: Resources | None = None
        self._lock: asyncio.Lock | None = None
        self._running: set[asyncio.Task[object]] = set()
        #: Set at shutdown: new messages are sent back, running exports get the grace period.
        self.draining = False

    @asynccontextmanager
    async def tracking(self) -> AsyncIterator[None]:
        """Mark the current task as a running export, so a shutdown can wait for it or cancel it."""
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            yield
        finally:
            self._running.discard(task)

    async def drain(self, grace: float) -> None:
        """Let running exports finish for ``grace`` seconds, then cancel the rest: each hands its
        job back (pending, not charged) and aborts its upload before it returns."""
        self.draining = True
        if self._resources is not None:
            self._resources.exporter.start_draining()
        if not self._running:
            return
        log.info("draining running exports", extra={"running": len(self._running), "grace_s": grace})
        _, pending = await asyncio.wait(set(self._running), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=15)
            log.info("handed back running exports", extra={"count": len(pending)})

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
            read_pool = None
            if settings.database_read_url:
                read_pool = await create_pool(
                    settings.database_read_url, max_size=settings.export_worker_concurrency
                )
                stack.push_async_callback(read_pool.close)
            client = await stack.enter_async_context(open_s3_client(settings))
            transport = WebhookClient(settings)
            stack.push_async_callback(transport.close)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        repository = JobRepository(
            pool, read_pool, on_replica_behind=self.metrics.replica_behind.inc, tables=settings.rollup_tables
        )
        store = ObjectStore.from_settings(client, settings, self.metrics)
        log.info("worker resources opened")
        return Resources(
            Exporter(repository, store, settings, metrics=self.metrics),
            Housekeeper(repository, store, settings, self.metrics),
            ScheduleService(
                repository, retention_months=settings.data_retention_months, metrics=self.metrics
            ),
            WebhookSender(repository, transport, settings, self.metrics),
            Restater(repository, check_interval=settings.restatement_check_interval, metrics=self.metrics),
        )

    async def _close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack, self._resources = None, None

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        port = self.settings.metrics_port
        if not port:
            return
        # A worker that cannot serve metrics still exports: it logs, and the scrape's `up` is 0.
        app = health.make_app(self.metrics.registry, health.WorkerHealth(worker, get_event_loop_thread))
        try:
            self._metrics_server = health.serve(self.settings.http_host, port, app)
        except OSError as exc:
            log.error("cannot serve /metrics and /healthz", extra={"port": port, "reason": str(exc)})
            return
        log.info("metrics and health served", extra={"host": self.settings.http_host, "port": port})

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        thread = get_event_loop_thread()
        if thread is not None:
            thread.run_coroutine(self._close())
        if self._metrics_server is not None:
            self._metrics_server()
