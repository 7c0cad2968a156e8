"""``JobQueue`` on Dramatiq: publishing off the event loop, failures as QueueUnavailable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pika
from dramatiq import Actor

from service.errors import QueueUnavailable

T = TypeVar("T")
#: How long a publish or a ping may take before the caller treats the broker as unavailable.
BROKER_TIMEOUT_SECONDS = 5.0


class DramatiqJobQueue:
    def __init__(self, export_actor: Actor[[str], None], rabbitmq_url: str) -> None:
        self._actor = export_actor
        self._url = rabbitmq_url
        # pika is blocking: publish from a few dedicated threads (each keeps its own connection).
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="publish")

    async def _off_loop(self, fn: Callable[[], T], what: str) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, fn), BROKER_TIMEOUT_SECONDS)
        except Exception as exc:
            # Any failure to publish means "not published": DramatiqError, pika's AMQPError, OSError
            # and timeouts, but also pika's ValueError for a socket reset mid-handshake. The job row
            # stays the truth and the sweep publishes it later, so none of them may become a 500.
            raise QueueUnavailable(
                f"RabbitMQ {what} failed: {type(exc).__name__}: {exc}"
                if str(exc)
                else f"RabbitMQ {what} failed: {type(exc).__name__}"
            ) from exc

    async def enqueue_export(self, job_id: uuid.UUID) -> None:
        await self._off_loop(lambda: self._actor.send(str(job_id)), "publish")

    async def ping(self) -> None:
        def connect() -> None:
            params = pika.URLParameters(self._url)
            params.socket_timeout = BROKER_TIMEOUT_SECONDS
            params.blocked_connection_timeout = BROKER_TIMEOUT_SECONDS
            pika.BlockingConnection(params).close()

        await self._off_loop(connect, "connection")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
