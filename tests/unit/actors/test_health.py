"""The worker's /healthz: which faults make it fail (stopped threads, a blocked event loop) and
that its HTTP endpoint serves both the probe and the metrics."""

from __future__ import annotations

import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from wsgiref.util import setup_testing_defaults

import orjson
import pytest
from dramatiq.asyncio import EventLoopThread
from prometheus_client import CollectorRegistry, Counter

from actors.health import WorkerHealth, make_app, serve


class Threads:
    """Threads that stay alive until released, standing in for Dramatiq's consumers and workers."""

    def __init__(self) -> None:
        self._release = threading.Event()
        self._threads: list[threading.Thread] = []

    def alive(self) -> threading.Thread:
        thread = threading.Thread(target=self._release.wait, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def stopped(self) -> threading.Thread:
        thread = threading.Thread(target=lambda: None)
        thread.start()
        thread.join()
        return thread

    def release(self) -> None:
        self._release.set()
        for thread in self._threads:
            thread.join()


@pytest.fixture
def threads() -> Iterator[Threads]:
    threads = Threads()
    yield threads
    threads.release()


@pytest.fixture
def loop_thread() -> Iterator[EventLoopThread]:
    thread = EventLoopThread(logging.getLogger("test"))
    thread.start(timeout=5)
    yield thread
    thread.stop()


def worker(consumers: dict[str, threading.Thread], workers: list[threading.Thread]) -> Any:
    return SimpleNamespace(consumers=consumers, workers=workers)


def healthy_worker(threads: Threads) -> Any:
    return worker(
        {"exports": threads.alive(), "exports.DQ": threads.alive()}, [threads.alive(), threads.alive()]
    )


def test_a_worker_whose_threads_run_and_loop_answers_is_healthy(
    threads: Threads, loop_thread: EventLoopThread
) -> None:
    assert WorkerHealth(healthy_worker(threads), lambda: loop_thread).problems() == []


def test_a_stopped_consumer_is_named_by_its_queue(threads: Threads, loop_thread: EventLoopThread) -> None:
    subject = worker({"exports": threads.alive(), "exports.DQ": threads.stopped()}, [threads.alive()])
    assert WorkerHealth(subject, lambda: loop_thread).problems() == ["consumer of queue 'exports.DQ' stopped"]


def test_stopped_worker_threads_are_counted(threads: Threads, loop_thread: EventLoopThread) -> None:
    subject = worker({"exports": threads.alive()}, [threads.alive(), threads.stopped(), threads.stopped()])
    assert WorkerHealth(subject, lambda: loop_thread).problems() == ["2 of 3 worker threads stopped"]


def test_a_blocked_event_loop_is_a_problem_and_one_that_answers_again_is_not(
    threads: Threads, loop_thread: EventLoopThread
) -> None:
    health = WorkerHealth(healthy_worker(threads), lambda: loop_thread, timeout=0.2)
    unblock = threading.Event()
    loop_thread.loop.call_soon_threadsafe(unblock.wait)  # blocking code on the loop, as a bug would
    try:
        assert health.problems() == ["event loop did not answer within 0.2 s (blocked)"]
    finally:
        unblock.set()
    assert health.problems() == []


def test_no_event_loop_thread_or_a_stopped_one_is_a_problem(threads: Threads) -> None:
    assert WorkerHealth(healthy_worker(threads), lambda: None).problems() == ["event loop thread stopped"]
    stopped = EventLoopThread(logging.getLogger("test"))
    stopped.start(timeout=5)
    stopped.stop()
    assert WorkerHealth(healthy_worker(threads), lambda: stopped).problems() == ["event loop thread stopped"]


def call(app: Any, path: str) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer.update(status=status, headers=dict(headers))

    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body


def registry_with_a_counter() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("probe_test_total", "A counter for the test", registry=registry).inc(3)
    return registry


def test_healthz_is_200_ok_or_503_with_the_problems(threads: Threads, loop_thread: EventLoopThread) -> None:
    registry = registry_with_a_counter()
    status, headers, body = call(
        make_app(registry, WorkerHealth(healthy_worker(threads), lambda: loop_thread)), "/healthz"
    )
    assert (status, headers["Content-Type"]) == ("200 OK", "application/json")
    assert orjson.loads(body) == {"status": "ok", "problems": []}

    broken = WorkerHealth(worker({"exports": threads.stopped()}, [threads.alive()]), lambda: None)
    status, _, body = call(make_app(registry, broken), "/healthz")
    assert status == "503 Service Unavailable"
    assert orjson.loads(body) == {
        "status": "unhealthy",
        "problems": ["consumer of queue 'exports' stopped", "event loop thread stopped"],
    }


def test_every_other_path_serves_the_registry(threads: Threads) -> None:
    # /metrics answers even when the worker is unhealthy: a scrape still shows what it did
    unhealthy = WorkerHealth(worker({}, [threads.stopped()]), lambda: None)
    status, _, body = call(make_app(registry_with_a_counter(), unhealthy), "/metrics")
    assert status == "200 OK"
    assert b"probe_test_total 3.0" in body


def test_serve_answers_over_http_and_stops(threads: Threads, loop_thread: EventLoopThread) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = make_app(registry_with_a_counter(), WorkerHealth(healthy_worker(threads), lambda: loop_thread))
    stop = serve("127.0.0.1", port, app)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert orjson.loads(response.read())["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"probe_test_total" in response.read()
    finally:
        stop()
    with pytest.raises(urllib.error.URLError) as stopped:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert isinstance(stopped.value.reason, ConnectionRefusedError)  # the port is closed


def test_serve_raises_when_the_port_is_taken(threads: Threads) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        app = make_app(CollectorRegistry(), WorkerHealth(worker({}, []), lambda: None))
        with pytest.raises(OSError, match="in use"):
            serve("127.0.0.1", taken.getsockname()[1], app)
