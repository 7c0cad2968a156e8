"""What operators see of the real processes: /metrics on the API and the worker, and one request
id from the API call through every log line the worker writes for that export."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.repository import seed_demo
from service.storage import open_s3_client
from tests.conftest import BUCKET, OVERRIDE_BUCKET, OVERRIDE_ORG
from tests.e2e.conftest import Stack, create_export, wait_for_job
from tests.house.test_observability import DASHBOARD, alert_exprs, dashboard_exprs, load_alerts, metric_names

pytestmark = pytest.mark.usefixtures("clean_state")
BODY = {
    "timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-02T00:00:00Z"},
    "granularity": "hourly",
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(url) as reply:
        assert reply.status == 200, await reply.text()
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = await reply.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def log_lines(stack: Stack, role: str) -> list[dict[str, object]]:
    lines = []
    for raw in (stack.logs / f"{role}.log").read_bytes().splitlines():
        try:
            lines.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue  # a library's plain line
    return lines


async def finished_export(http: aiohttp.ClientSession, stack: Stack, org: uuid.UUID, request_id: str) -> str:
    """An hourly export of a day of demo rollups (3 models), created with ``request_id``."""
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC)
    settings = stack.settings
    assert await seed_demo(settings.database_url, settings.rollup_tables, org, 3, start, end, "USD") == 72
    headers = {**stack.auth(org), "X-Request-ID": request_id}
    async with http.post(stack.exports_url(org), json=BODY, headers=headers) as reply:
        assert reply.status == 202, await reply.text()
        assert reply.headers["X-Request-ID"] == request_id
        job_id = str((await reply.json())["jobId"])
    assert (await wait_for_job(http, stack, org, job_id))["status"] == "succeeded"
    return job_id


async def test_one_request_id_follows_an_export_from_the_api_into_the_worker(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    # Given an export created with the caller's request id
    org, request_id = uuid.uuid4(), f"e2e-{uuid.uuid4().hex[:12]}"
    job_id = await finished_export(http, stack, org, request_id)
    # Then the API's lines for the call carry it
    api = [line for line in log_lines(stack, "api") if line.get("request_id") == request_id]
    assert any(line.get("msg") == "export enqueued" and line.get("job_id") == job_id for line in api), api
    # And so does every worker line about that job, with the org and the attempt
    deadline = time.monotonic() + 10
    while not (worker := [line for line in log_lines(stack, "worker") if line.get("job_id") == job_id]):
        assert time.monotonic() < deadline, "no worker line for the job"
        await asyncio.sleep(0.2)
    assert {line["msg"] for line in worker} >= {"export started", "export succeeded"}
    for line in worker:
        assert line.get("request_id") == request_id, line
        assert line.get("org_id") == str(org), line
        assert line.get("attempt") == 1, line


async def test_metrics_on_the_api_and_the_worker_count_what_happened(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    # Given the counters before, and then one export created and finished
    api_before, worker_before = (
        await scrape(http, stack.api_metrics),
        await scrape(http, stack.worker_metrics),
    )
    org = uuid.uuid4()
    await finished_export(http, stack, org, f"e2e-{uuid.uuid4().hex[:12]}")
    api, worker = await scrape(http, stack.api_metrics), await scrape(http, stack.worker_metrics)

    # Then the API counted the POST under its route template, and reports the backlog it read
    create = {"route": "/analytics/v1/orgs/{orgId}/exports", "method": "POST", "status": "202"}
    assert (
        value(api, "exports_http_requests_total", **create)
        == value(api_before, "exports_http_requests_total", **create) + 1
    )
    assert ("exports_jobs", frozenset({("status", "pending")})) in api
    assert ("exports_oldest_pending_job_age_seconds", frozenset()) in api
    queue = stack.settings.queue_name
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        assert ("exports_queue_messages", frozenset({("queue", name)})) in api, name
    assert value(api, "exports_backlog_read_errors_total", source="database") == 0
    assert value(api, "exports_backlog_read_errors_total", source="broker") == 0

    # And the worker counted the succeeded attempt, its rows, bytes and parts
    def grew(name: str, **labels: str) -> float:
        return value(worker, name, **labels) - value(worker_before, name, **labels)

    assert grew("exports_attempts_total", outcome="succeeded") == 1
    assert grew("exports_jobs_finished_total", status="succeeded") == 1
    assert grew("exports_export_duration_seconds_count", outcome="succeeded") == 1
    assert grew("exports_rows_total") > 0
    assert grew("exports_bytes_total") > 0
    assert grew("exports_part_upload_duration_seconds_count") >= 1
    assert value(worker, "exports_running_exports") == 0


async def test_the_live_endpoints_expose_every_metric_the_alerts_and_dashboard_use(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    # Given what the API and a worker of the running stack serve (after one export, so every
    # family has been touched)
    await finished_export(http, stack, uuid.uuid4(), f"e2e-{uuid.uuid4().hex[:12]}")
    served = {name for name, _ in await scrape(http, stack.api_metrics)}
    served |= {name for name, _ in await scrape(http, stack.worker_metrics)}
    # Then every series the alert rules and the dashboard query is among them (Prometheus's own
    # `up` aside)
    used = set()
    for _, expr in alert_exprs(load_alerts()) + dashboard_exprs(orjson.loads(DASHBOARD.read_bytes())):
        used |= metric_names(expr)
    assert used - {"up"}, "no metric names found: the extraction is broken"
    assert sorted(used - served - {"up"}) == []


async def test_the_rabbitmq_console_names_every_connection_after_its_role_and_process(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    # Given the stack after one export (the API has published, the worker consumed, the scheduler
    # sent ticks)
    await finished_export(http, stack, uuid.uuid4(), f"e2e-{uuid.uuid4().hex[:12]}")
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_connections", "client_properties", stdout=asyncio.subprocess.PIPE
    )
    listing, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    # Then each process's connections carry its role and pid, as the runbook says
    named = set(re.findall(r'"analytics-exports (\w+) [^"]*:(\d+)"', listing.decode()))
    pids = stack.pids
    assert {("publisher", str(pids["api"])), ("worker", str(pids["worker"]))} <= named, named
    assert ("scheduler", str(pids["scheduler"])) in named, named


async def test_the_worker_answers_its_liveness_probe_beside_its_metrics(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    # Given a worker of the running stack that has run an export (its loop and threads in use)
    await finished_export(http, stack, uuid.uuid4(), f"e2e-{uuid.uuid4().hex[:12]}")
    # Then the probe compose runs answers 200 on the metrics port, naming no problem
    probe = stack.worker_metrics.removesuffix("/metrics") + "/healthz"
    async with http.get(probe) as reply:
        assert reply.status == 200, await reply.text()
        assert await reply.json() == {"status": "ok", "problems": []}


async def test_one_orgs_missing_bucket_fails_only_its_exports_and_leaves_the_api_ready(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    # Given the override bucket of one org is gone (misconfigured, or deleted by mistake)
    async with open_s3_client(stack.settings) as client:
        await client.delete_bucket(Bucket=OVERRIDE_BUCKET)  # type: ignore[attr-defined]
    # When that org and another one each request an export
    other = uuid.uuid4()
    body = {
        "timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-02T00:00:00Z"},
        "granularity": "daily",
    }
    broken = await wait_for_job(
        http, stack, OVERRIDE_ORG, str((await create_export(http, stack, OVERRIDE_ORG, body))["jobId"])
    )
    fine = await wait_for_job(
        http, stack, other, str((await create_export(http, stack, other, body))["jobId"])
    )
    # Then only that org's export fails, saying why; the other succeeds
    assert broken["status"] == "failed"
    assert "NoSuchBucket" in str(broken["errorMessage"]), broken
    assert fine["status"] == "succeeded", fine
    # And the API stays in rotation: ready but degraded, naming the bucket on its internal port
    async with http.get(f"{stack.base}/readyz") as reply:
        assert (reply.status, await reply.json()) == (200, {"status": "degraded"})
    internal = stack.api_metrics.removesuffix("/metrics")
    async with http.get(f"{internal}/readyz") as reply:
        report = await reply.json()
    assert report["checks"][f"bucket:{OVERRIDE_BUCKET}"].startswith("error: S3 head of bucket"), report
    assert report["checks"]["database"] == report["checks"]["broker"] == report["checks"]["rollups"] == "ok"
    # And the dependency gauge says the same, for the alert
    families = {
        f.name: f for f in text_string_to_metric_families(await (await http.get(stack.api_metrics)).text())
    }
    up = {s.labels["dependency"]: s.value for s in families["exports_dependency_up"].samples}
    assert up == {
        "database": 1.0,
        "rollups": 1.0,
        "broker": 1.0,
        f"bucket:{BUCKET}": 1.0,
        f"bucket:{OVERRIDE_BUCKET}": 0.0,
    }
