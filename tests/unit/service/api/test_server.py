"""The API as served to the network (service.api.server and connections): slow and surplus
clients, malformed HTTP, the Server header and the internal port, over real loopback sockets,
with fakes behind the handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import cast

import pytest
from aiohttp import web

from devtools.local import free_port
from service.api import keys
from service.api.app import wired_app
from service.api.server import Listening, listen
from service.exports import ExportService
from service.repository import JobRepository
from service.settings import Settings
from service.storage import ObjectStore
from tests.support.fakes import SECRET, FakeQueue, FakeRepository, FakeS3

#: Short enough to wait out, long enough that a loaded CI machine answers a prompt client first.
HEADER_TIMEOUT = 0.5
SETTINGS = Settings(
    auth_jwt_secret=SECRET,
    http_host="127.0.0.1",
    http_port=0,
    metrics_port=0,
    http_header_timeout=HEADER_TIMEOUT,
    http_max_connections=3,
)


def app_with_fakes(settings: Settings) -> web.Application:
    app = wired_app(settings, FakeQueue())
    repo = FakeRepository()
    store = ObjectStore(FakeS3(), settings.export_part_size)  # type: ignore[arg-type]
    app[keys.REPOSITORY] = cast(JobRepository, repo)
    app[keys.STORE] = store
    app[keys.EXPORTS] = ExportService(cast(JobRepository, repo), store, FakeQueue())
    return app


@pytest.fixture
async def served() -> AsyncIterator[Listening]:
    listening = await listen(app_with_fakes(SETTINGS), SETTINGS)
    yield listening
    await listening.stop()


async def connect(
    listening: Listening, port: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port or listening.ports[0])


async def request(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, path: str) -> bytes:
    """One keep-alive GET; the head and body of its answer."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_a_header_trickled_line_by_line_is_cut_off_at_the_header_deadline(served: Listening) -> None:
    # Given a client that sends its request line, then one header line at a time, never the end
    reader, writer = await connect(served)
    writer.write(b"GET /healthz HTTP/1.1\r\n")
    lines_sent = 0
    answer = b""
    # When it keeps trickling for up to 40 deadlines
    for lines_sent in range(1, 200):
        try:
            writer.write(f"X-Slow-{lines_sent}: a\r\n".encode())
            await writer.drain()
        except ConnectionError:
            break
        try:
            answer = await asyncio.wait_for(reader.read(), timeout=HEADER_TIMEOUT / 5)
        except TimeoutError:
            continue
        break
    writer.close()
    # Then the server answered 408 and hung up long before the client would have stopped
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"Connection: close" in answer
    assert b"did not arrive within 0.5 s" in answer
    assert lines_sent < 199


async def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(served: Listening) -> None:
    reader, writer = await connect(served)
    answer = await asyncio.wait_for(reader.read(), timeout=HEADER_TIMEOUT * 20)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_a_keep_alive_connection_may_idle_between_requests_longer_than_the_deadline(
    served: Listening,
) -> None:
    # Given a client that sends whole requests promptly but waits between them
    reader, writer = await connect(served)
    first = await request(writer, reader, "/healthz")
    await asyncio.sleep(HEADER_TIMEOUT * 3)
    # When it sends its next request on the same connection, then it is answered: idling is the
    # keep-alive timeout's business (HTTP_KEEPALIVE_TIMEOUT), not the header deadline's
    second = await request(writer, reader, "/healthz")
    writer.close()
    assert first.startswith(b"HTTP/1.1 200 ")
    assert second.startswith(b"HTTP/1.1 200 ")


async def test_connections_past_the_cap_get_503_at_once_and_the_cap_frees_up(served: Listening) -> None:
    # Given as many open connections as allowed, each in a request-free keep-alive state
    held = [await connect(served) for _ in range(SETTINGS.http_max_connections)]
    for reader, writer in held:
        assert (await request(writer, reader, "/healthz")).startswith(b"HTTP/1.1 200 ")
    # When one more connects, then it is refused with 503 and closed without sending anything
    reader, writer = await connect(served)
    refused = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), refused
    assert b"Retry-After: 1" in refused
    # And once one of them closes, a new connection is served again
    held[0][1].close()
    await held[0][1].wait_closed()
    for _ in range(50):
        reader, writer = await connect(served)
        answer = await request(writer, reader, "/healthz") if not reader.at_eof() else b""
        writer.close()
        if answer.startswith(b"HTTP/1.1 200 "):
            break
        await asyncio.sleep(0.05)
    assert answer.startswith(b"HTTP/1.1 200 ")
    for _, writer in held[1:]:
        writer.close()


async def test_no_server_version_is_announced(served: Listening) -> None:
    reader, writer = await connect(served)
    for path in ("/healthz", "/no/such/path", "/analytics/v1/orgs/x/exports"):
        answer = await request(writer, reader, path)
        assert b"\r\nserver:" not in answer.lower(), answer
    writer.close()


async def test_malformed_http_is_counted_and_logged_once_at_warning_without_a_traceback(
    served: Listening, caplog: pytest.LogCaptureFixture
) -> None:
    # Given three clients that send malformed header blocks
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        reader, writer = await connect(served)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
        assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer
    # Then each is counted, and the log has one warning line, with no traceback, nothing above
    registry = served.runner.app[keys.METRICS].registry
    assert registry.get_sample_value("exports_http_malformed_requests_total") == 3
    lines = [r for r in caplog.records if r.name == "service.api.http"]
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (logging.WARNING, "malformed HTTP request refused")
    ]
    assert lines[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_metrics_and_readiness_details_only_on_the_metrics_port() -> None:
    # Given an API with METRICS_PORT set
    settings = replace(SETTINGS, metrics_port=free_port())
    listening = await listen(app_with_fakes(settings), settings)
    try:
        public, internal = listening.ports
        assert internal == settings.metrics_port
        reader, writer = await connect(listening, public)
        # Then on the public port /metrics is not there and /readyz says only whether it is ready
        assert (await request(writer, reader, "/metrics")).startswith(b"HTTP/1.1 404 ")
        ready = await request(writer, reader, "/readyz")
        assert b'"checks"' not in ready
        assert (await request(writer, reader, "/healthz")).startswith(b"HTTP/1.1 200 ")
        writer.close()
        # And on the metrics port both are whole
        reader, writer = await connect(listening, internal)
        metrics = await request(writer, reader, "/metrics")
        assert metrics.startswith(b"HTTP/1.1 200 ")
        assert b"exports_http_open_connections" in metrics
        assert b'"checks"' in await request(writer, reader, "/readyz")
        writer.close()
    finally:
        await listening.stop()
