"""Request ids, request metrics and the backlog gauges of the API's /metrics."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.api import keys
from service.api.app import wired_app
from service.api.auth import READ, WRITE, mint_token
from service.errors import DatabaseUnavailable, QueueUnavailable
from service.exports import ExportService
from service.job import JobStatus
from service.repository import JobRepository
from service.settings import Settings
from service.storage import ObjectStore
from tests.support.fakes import ORG_A, SECRET, FakeQueue, FakeRepository, FakeS3, make_job

Client = TestClient[web.Request, web.Application]
EXPORTS_A = f"/analytics/v1/orgs/{ORG_A}/exports"
BODY = {"timeRange": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-08T00:00:00Z"}, "granularity": "daily"}
AUTH = {"Authorization": f"Bearer {mint_token(SECRET, subject='ana', orgs=[ORG_A], scopes=[READ, WRITE])}"}


@pytest.fixture
async def client(aiohttp_client: Any, repo: FakeRepository, queue: FakeQueue) -> Client:
    settings = Settings(auth_jwt_secret=SECRET, data_retention_months=240, metrics_port=0)
    store = ObjectStore(FakeS3(), settings.export_part_size)  # type: ignore[arg-type]
    app = wired_app(settings, queue)
    app[keys.REPOSITORY] = cast(JobRepository, repo)
    app[keys.STORE] = store
    app[keys.EXPORTS] = ExportService(cast(JobRepository, repo), store, queue)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics, parsed: (sample name, sorted labels) -> value."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


# --- request ids ------------------------------------------------------------------------------


async def test_a_response_without_a_given_id_gets_a_new_one_each_time(client: Client) -> None:
    ids = {(await client.get("/healthz")).headers["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


async def test_a_plausible_given_id_is_echoed_even_on_errors(client: Client) -> None:
    for path in ("/healthz", EXPORTS_A, "/no/such/path"):  # 200, 401 problem, 404 problem
        response = await client.get(path, headers={"X-Request-ID": "req-7f3a:9"})
        assert response.headers["X-Request-ID"] == "req-7f3a:9", path


@pytest.mark.parametrize("given", ["has space", "x" * 129, "tab\there", "ünïcode"])
async def test_an_implausible_given_id_is_replaced(client: Client, given: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": given})
    assert response.headers["X-Request-ID"] != given
    assert len(response.headers["X-Request-ID"]) == 32


async def test_a_created_job_carries_the_request_id(client: Client, repo: FakeRepository) -> None:
    response = await client.post(EXPORTS_A, json=BODY, headers={**AUTH, "X-Request-ID": "month-end-42"})
    assert response.status == 202
    job = repo.jobs[next(iter(repo.jobs))]
    assert job.request_id == "month-end-42"


# --- request metrics --------------------------------------------------------------------------


async def test_requests_are_counted_by_route_template_method_and_status(
    client: Client, repo: FakeRepository
) -> None:
    job = make_job()
    repo.jobs[job.job_id] = job
    assert (await client.get(f"{EXPORTS_A}/{job.job_id}", headers=AUTH)).status == 200
    assert (await client.get(f"{EXPORTS_A}/{make_job().job_id}", headers=AUTH)).status == 404
    assert (await client.post(EXPORTS_A, json=BODY, headers=AUTH)).status == 202
    assert (await client.get("/no/such/path")).status == 404
    samples = await scrape(client)
    one = "/analytics/v1/orgs/{orgId}/exports/{jobId}"
    for labels, count in [
        ((("method", "GET"), ("route", one), ("status", "200")), 1),
        ((("method", "GET"), ("route", one), ("status", "404")), 1),
        ((("method", "POST"), ("route", "/analytics/v1/orgs/{orgId}/exports"), ("status", "202")), 1),
        ((("method", "GET"), ("route", "unmatched"), ("status", "404")), 1),
    ]:
        assert samples[("exports_http_requests_total", labels)] == count, labels
    # The raw path (with ids in it) never becomes a label value
    assert not any(str(job.job_id) in dict(labels).get("route", "") for _, labels in samples)
    latency = ("exports_http_request_duration_seconds_count", (("method", "GET"), ("route", one)))
    assert samples[latency] == 2


async def test_an_unusual_method_is_counted_as_other_so_clients_cannot_add_series(client: Client) -> None:
    for method in ("PROPFIND", "MKCOL", "GET"):  # WebDAV's: HTTP parsers accept them
        await client.request(method, "/no/such/path")
    samples = await scrape(client)
    methods = {dict(labels)["method"] for name, labels in samples if name == "exports_http_requests_total"}
    assert methods == {"other", "GET"}
    assert (
        samples[
            ("exports_http_requests_total", (("method", "other"), ("route", "unmatched"), ("status", "404")))
        ]
        == 2
    )


# --- backlog ----------------------------------------------------------------------------------


async def test_the_backlog_gauges_read_jobs_and_queues_at_scrape_time(
    client: Client, repo: FakeRepository, queue: FakeQueue
) -> None:
    now = datetime.now(UTC)
    for job in [
        make_job(initiated_at=now - timedelta(minutes=10)),  # the oldest due
        make_job(initiated_at=now - timedelta(minutes=2)),
        make_job(initiated_at=now - timedelta(hours=1), available_at=now + timedelta(minutes=5)),  # backoff
        make_job(status=JobStatus.RUNNING),
        make_job(status=JobStatus.FAILED),
    ]:
        repo.jobs[job.job_id] = job
    queue.queue_depths = {"exports": 4, "exports.DQ": 1, "exports.XQ": 2}
    samples = await scrape(client)
    assert samples[("exports_jobs", (("status", "pending"),))] == 3
    assert samples[("exports_jobs", (("status", "running"),))] == 1
    assert 599 <= samples[("exports_oldest_pending_job_age_seconds", ())] < 660
    assert samples[("exports_queue_messages", (("queue", "exports.XQ"),))] == 2
    assert samples[("exports_queue_messages", (("queue", "exports"),))] == 4


async def test_a_scrape_succeeds_while_the_database_and_broker_are_away(
    client: Client, repo: FakeRepository, queue: FakeQueue
) -> None:
    # Given a first scrape that read the backlog
    job = make_job()
    repo.jobs[job.job_id] = job
    await scrape(client)
    # When both sources fail
    repo.backlog_error = DatabaseUnavailable("PostgreSQL is unavailable: connection refused")
    queue.queue_depths = QueueUnavailable("RabbitMQ connection failed")
    samples = await scrape(client)
    # Then the scrape still answers, counts each miss, and keeps the last values read
    assert samples[("exports_backlog_read_errors_total", (("source", "database"),))] == 1
    assert samples[("exports_backlog_read_errors_total", (("source", "broker"),))] == 1
    assert samples[("exports_jobs", (("status", "pending"),))] == 1


# --- clients that go away or stall ------------------------------------------------------------


async def half_sent_create(
    client: Client, body_bytes: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST whose headers announce a body of 1,000 bytes of which only ``body_bytes`` are sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    head = (
        f"POST {EXPORTS_A} HTTP/1.1\r\nHost: test\r\nAuthorization: {AUTH['Authorization']}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    writer.write(head.encode() + b"{" * body_bytes)
    await writer.drain()
    return reader, writer


async def test_a_client_that_drops_mid_body_is_a_499_not_a_server_error(
    client: Client, repo: FakeRepository, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a client that sends half of its body and then closes the connection
    _, writer = await half_sent_create(client, body_bytes=10)
    await asyncio.sleep(0.2)  # the handler is reading the body by now
    writer.close()
    # When the API has noticed
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for _ in range(50):
        samples = await scrape(client)
        if any(dict(labels).get("status") == "499" for (_, labels) in samples):
            break
        await asyncio.sleep(0.05)
    # Then the request is counted as closed by the client (499), no 5xx, nothing logged as an error
    statuses = {
        dict(labels).get("status") for (name, labels) in samples if name.startswith("exports_http_requests")
    }
    assert "499" in statuses
    assert not any(status and status.startswith("5") for status in statuses)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert repo.jobs == {}


async def test_a_body_trickled_past_the_deadline_gets_408_and_the_connection_closed(
    aiohttp_client: Any, repo: FakeRepository, queue: FakeQueue
) -> None:
    # Given an API whose body deadline is short, and a client that sends its body too slowly
    settings = Settings(
        auth_jwt_secret=SECRET, data_retention_months=240, http_body_timeout=0.3, metrics_port=0
    )
    store = ObjectStore(FakeS3(), settings.export_part_size)  # type: ignore[arg-type]
    app = wired_app(settings, queue)
    app[keys.REPOSITORY] = cast(JobRepository, repo)
    app[keys.STORE] = store
    app[keys.EXPORTS] = ExportService(cast(JobRepository, repo), store, queue)
    client = await aiohttp_client(app)
    reader, _ = await half_sent_create(client, body_bytes=1)
    # When the deadline passes, then the answer is 408 and the server closes the connection
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"Connection: close" in answer
    assert repo.jobs == {}
