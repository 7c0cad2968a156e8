"""A worker process's own HTTP endpoint on METRICS_PORT: ``/metrics`` for Prometheus and
``/healthz`` for a container's liveness probe.

``/healthz`` answers 200 while the process can still do its work: the event loop every export runs
on answers within ``LOOP_TIMEOUT``, and every Dramatiq consumer and worker thread is alive. It
answers 503 with the problems otherwise; restarting the container is then the fix. An outage of
RabbitMQ, PostgreSQL or S3 does not fail it: the worker reconnects by itself, and restarting every
worker would not bring the dependency back (the API's ``/readyz`` reports those).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from dramatiq import Worker
from dramatiq.asyncio import EventLoopThread
from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)

#: How long the event loop may take to run a no-op callback before the worker counts as stuck.
LOOP_TIMEOUT = 2.0

_StartResponse = Callable[[str, list[tuple[str, str]]], Any]
_App = Callable[[dict[str, Any], _StartResponse], Iterable[bytes]]


class WorkerHealth:
    """What ``/healthz`` checks, for one Dramatiq worker and its event-loop thread."""

    def __init__(
        self,
        worker: Worker,
        loop_thread: Callable[[], EventLoopThread | None],
        *,
        timeout: float = LOOP_TIMEOUT,
    ) -> None:
        self._worker = worker
        self._loop_thread = loop_thread
        self._timeout = timeout

    def problems(self) -> list[str]:
        """Why this worker cannot do its work, or nothing when it can."""
        # Copies: the worker adds and removes threads from its own threads at boot and shutdown.
        consumers = dict(self._worker.consumers)
        problems = [
            f"consumer of queue {queue!r} stopped"
            for queue, consumer in sorted(consumers.items())
            if not consumer.is_alive()
        ]
        threads = list(self._worker.workers)
        stopped = sum(not thread.is_alive() for thread in threads)
        if stopped:
            problems.append(f"{stopped} of {len(threads)} worker threads stopped")
        loop_problem = self._loop_problem()
        if loop_problem:
            problems.append(loop_problem)
        return problems

    def _loop_problem(self) -> str | None:
        thread = self._loop_thread()
        if thread is None or not thread.is_alive():
            return "event loop thread stopped"
        answered = threading.Event()
        try:
            thread.loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # the loop is closed
            return "event loop closed"
        if not answered.wait(self._timeout):
            return f"event loop did not answer within {self._timeout:g} s (blocked)"
        return None


def make_app(registry: CollectorRegistry, health: WorkerHealth) -> _App:
    """``/healthz`` from ``health``; every other path is the metrics of ``registry``."""
    metrics: _App = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            return metrics(environ, start_response)
        problems = health.problems()
        if problems:
            log.warning("worker unhealthy", extra={"problems": problems})
        body = orjson.dumps({"status": "unhealthy" if problems else "ok", "problems": problems})
        status = "503 Service Unavailable" if problems else "200 OK"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes and probes are not news
        pass


def serve(host: str, port: int, app: _App) -> Callable[[], None]:
    """Serve ``app`` on ``host:port`` from a daemon thread; returns the function that stops it.
    Raises OSError when the port cannot be bound."""
    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = type("_Server", (_Server,), {"address_family": family})
    server: WSGIServer = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="worker-http", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
