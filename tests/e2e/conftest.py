"""The real processes: `analytics-exports api`, `worker` and `scheduler`, on real services."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from botocore.exceptions import ClientError
from playwright.sync_api import Browser, sync_playwright
from yarl import URL

from devtools.local import PAGE_DOWNLOADS_CORS, free_port, wait_http
from service.api.auth import READ, WRITE, mint_token
from service.settings import Settings
from service.storage import open_s3_client
from tests.conftest import (
    BIN,
    BUCKET,
    OVERRIDE_BUCKET,
    delete_queues,
    fresh_database,
    service_env,
)

SECRET = "e2e-secret-that-is-at-least-32-bytes-long!"
ROLES = ("api", "worker", "scheduler")


@dataclass
class Stack:
    base: str
    env: dict[str, str]
    settings: Settings
    logs: Path
    #: The worker's /metrics.
    worker_metrics: str
    #: The API's /metrics, on its own METRICS_PORT (the public port has none).
    api_metrics: str
    #: The process id of each role.
    pids: dict[str, int]

    def token(
        self, *orgs: uuid.UUID, scope: str = f"{READ} {WRITE}", sub: str = "finance@example.com"
    ) -> str:
        return mint_token(SECRET, subject=sub, orgs=orgs, scopes=scope.split())

    def auth(self, *orgs: uuid.UUID, scope: str = f"{READ} {WRITE}") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(*orgs, scope=scope)}"}

    def exports_url(self, org: uuid.UUID) -> str:
        return f"{self.base}/analytics/v1/orgs/{org}/exports"

    def seed_demo(self, *options: str) -> uuid.UUID:
        """A new org with demo rollups, seeded as `make run` does (`seed-demo` and its options)."""
        org = uuid.uuid4()
        seeded = subprocess.run(
            [str(BIN / "analytics-exports"), "seed-demo", "--org", str(org), *options],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert seeded.returncode == 0, seeded.stderr
        return org


async def _create_buckets(settings: Settings) -> None:
    async with open_s3_client(settings) as client:
        for bucket in (BUCKET, OVERRIDE_BUCKET):
            with contextlib.suppress(ClientError):  # already there from an earlier run
                await client.create_bucket(Bucket=bucket)
            await client.put_bucket_cors(Bucket=bucket, CORSConfiguration=PAGE_DOWNLOADS_CORS)


@pytest.fixture(scope="module")
def stack(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The processes, for one test module, on a database of their own."""
    with fresh_database("analytics_e2e") as database_url:
        yield from run_stack(database_url, s3_endpoint, tmp_path_factory)


@pytest.fixture
def settings(stack: Stack) -> Settings:
    """The stack's settings: clean_state then empties the stack's own database."""
    return stack.settings


def run_stack(
    database_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory, **extra: str
) -> Iterator[Stack]:
    """The processes on ``database_url`` (migrated), with ``extra`` settings."""
    queue = f"exports-e2e-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **os.environ,
        **service_env(database_url, s3_endpoint, queue),
        "HTTP_PORT": str(port),
        "METRICS_PORT": str(free_port()),
        "EXPORT_WORKER_INTERVAL": "1s",
        # Webhook retries within a test's patience (the schedule's shape, not its hours).
        "WEBHOOK_RETRY_SCHEDULE": "1s,1s,1s,1s,1s",
        "WEBHOOK_TIMEOUT": "2s",
        "RESTATEMENT_CHECK_INTERVAL": "1s",
        "AUTH_JWT_SECRET": SECRET,
        **extra,
    }
    settings = Settings.from_env(env)
    asyncio.run(_create_buckets(settings))
    logs = tmp_path_factory.mktemp("stack-logs")
    processes = {}
    # The API's operators' port, apart from the worker's (both run on this one machine)
    api_env = {**env, "METRICS_PORT": str(free_port())}
    for role in ROLES:
        log = (logs / f"{role}.log").open("wb")
        processes[role] = subprocess.Popen(
            [str(BIN / "analytics-exports"), role],
            env=api_env if role == "api" else env,
            stdout=log,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_http(base + "/healthz", timeout=30), "the API did not start"
        metrics = f"http://127.0.0.1:{settings.metrics_port}/metrics"
        api_metrics = f"http://127.0.0.1:{api_env['METRICS_PORT']}/metrics"
        yield Stack(
            base,
            env,
            settings,
            logs,
            metrics,
            api_metrics,
            {role: proc.pid for role, proc in processes.items()},
        )
    finally:
        for proc in processes.values():
            proc.send_signal(signal.SIGTERM)
        for role, proc in processes.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"{role} did not stop within 30 s of SIGTERM")
        delete_queues(queue)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def wait_for_job(
    http: aiohttp.ClientSession, stack: Stack, org: uuid.UUID, job_id: str, wait_seconds: float = 60
) -> dict[str, object]:
    """Poll the job until it is finished (succeeded, failed or expired)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        async with http.get(f"{stack.exports_url(org)}/{job_id}", headers=stack.auth(org)) as reply:
            assert reply.status == 200, await reply.text()
            job: dict[str, object] = await reply.json()
        if job["status"] in ("succeeded", "failed", "expired", "cancelled"):
            return job
        if time.monotonic() > deadline:
            logs = {p.name: p.read_text()[-3000:] for p in stack.logs.iterdir()}
            raise AssertionError(f"job {job_id} still {job['status']} after {wait_seconds}s; logs: {logs}")
        await asyncio.sleep(0.1)


async def create_export(
    http: aiohttp.ClientSession, stack: Stack, org: uuid.UUID, body: dict[str, object]
) -> dict[str, object]:
    async with http.post(stack.exports_url(org), json=body, headers=stack.auth(org)) as reply:
        assert reply.status == 202, await reply.text()
        job: dict[str, object] = await reply.json()
        assert reply.headers["Location"] == f"/analytics/v1/orgs/{org}/exports/{job['jobId']}"
    return job


async def download(http: aiohttp.ClientSession, stack: Stack, org: uuid.UUID, job_id: str) -> bytes:
    """Follow the API's 302 to the presigned URL, as a browser or `curl -L` would."""
    async with http.get(
        f"{stack.exports_url(org)}/{job_id}/download", headers=stack.auth(org), allow_redirects=False
    ) as reply:
        assert reply.status == 302, await reply.text()
        assert reply.headers["Cache-Control"] == "no-store"
        location = reply.headers["Location"]
    async with http.get(URL(location, encoded=True)) as reply:
        assert reply.status == 200
        return await reply.read()


#: Where browser tests write their screenshots (test artifacts; not committed).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
#: Debian's Chromium (ops/install-tools.sh installs it); Playwright downloads no browser here.
CHROMIUM = "/usr/bin/chromium"
#: Flags for a headless Chromium on a closed network, as root, with nothing of its own.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def chromium(stack: Stack) -> Iterator[Browser]:
    """Chromium for a module, started after its stack and stopped before it: the sync API keeps
    an event loop marked running on this thread while it is open, and asyncio.run (the stack's
    database set-up and teardown, pytest-asyncio's tests in later modules) refuses to start then.
    Each test takes a new context (its own storage)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        yield browser
        browser.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    """This test's screenshot folder under build/screenshots/."""
    folder = SCREENSHOTS / request.node.name.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
