"""Fixtures shared by integration and e2e tests: real PostgreSQL, RabbitMQ and S3 (moto server).

Each test session gets its own database (migrated once), its own RabbitMQ queue name and its
own moto server on a free loopback port, so a developer's `make run` is never disturbed.
Nothing here starts unless a test asks for it: unit tests need none of it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pika
import pytest

from devtools import local as localdev
from devtools.local import PAGE_DOWNLOADS_CORS, moto_server
from service.settings import Settings
from service.storage import open_s3_client

ADMIN_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
BIN = Path(sys.executable).parent
BUCKET = "analytics-exports"
OVERRIDE_BUCKET = "acme-finance-exports"
#: An org whose exports go to OVERRIDE_BUCKET in every test settings object.
OVERRIDE_ORG = uuid.UUID("0b9a4e7c-59a4-4d5e-8d8a-2f8a4d6c1e01")
S3_KEYS = {"S3_ACCESS_KEY": "test", "S3_SECRET_KEY": "test-secret"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as (endpoint, _):
        yield endpoint


def fresh_database(
    prefix: str = "analytics_test", *, migrated: bool = True
) -> contextlib.AbstractContextManager[str]:
    """A new database of its own, migrated with the default rollup tables (unless not
    ``migrated``: empty), dropped afterwards. Every stack of processes gets one, so one stack's
    sweep never touches another's jobs."""
    return localdev.fresh_database(ADMIN_DATABASE_URL, prefix, migrated=migrated)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def queue_name() -> Iterator[str]:
    name = f"exports-test-{uuid.uuid4().hex[:8]}"
    yield name
    delete_queues(name)


def delete_queues(name: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        for queue in (name, f"{name}.DQ", f"{name}.XQ"):
            channel.queue_delete(queue=queue)
    finally:
        connection.close()


def service_env(database_url: str, s3_endpoint: str, queue_name: str, **extra: str) -> dict[str, str]:
    """The environment every test process and Settings object is built from."""
    return {
        "DATABASE_URL": database_url,
        "RABBITMQ_URL": RABBITMQ_URL,
        "EXPORT_QUEUE": queue_name,
        "S3_ENDPOINT": s3_endpoint,
        "S3_BUCKET": BUCKET,
        "S3_BUCKET_OVERRIDES": f"{OVERRIDE_ORG}={OVERRIDE_BUCKET}",
        # The smallest part S3 allows, so modest test exports already span several parts.
        "EXPORT_PART_SIZE": "5MiB",
        # Test data sits at fixed dates in 2026; a wide window keeps the tests true in later years
        # (the retention rule itself is tested with an explicit clock).
        "DATA_RETENTION_MONTHS": "240",
        # Many workers run at once in the tests: none serves metrics unless a test gives it a port.
        "METRICS_PORT": "0",
        # Webhook receivers in the tests listen on loopback.
        "WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        **S3_KEYS,
        **extra,
    }


@pytest.fixture
def settings(database_url: str, s3_endpoint: str, queue_name: str) -> Settings:
    return Settings.from_env(service_env(database_url, s3_endpoint, queue_name))


@pytest.fixture
async def clean_state(settings: Settings) -> None:
    """Empty tables and an S3 server holding just the (empty) test buckets."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        # TRUNCATE locks its tables in the order listed, the order every transaction of the
        # service takes them in (a schedule, then its jobs; a job row, then its events, manifest
        # or idempotency key), so a worker still finishing an earlier test's work cannot deadlock it.
        await conn.execute(
            "TRUNCATE analytics.export_schedules, analytics.export_jobs, analytics.export_events,"
            " analytics.export_manifests, analytics.export_idempotency, analytics.webhook_endpoints,"
            " analytics.webhook_deliveries, analytics.webhook_attempts, analytics.hourly_rollups,"
            " analytics.daily_rollups"
        )
    finally:
        await conn.close()
    assert settings.s3_endpoint is not None
    async with aiohttp.ClientSession() as http, http.post(settings.s3_endpoint + "/moto-api/reset") as reply:
        assert reply.status == 200
    async with open_s3_client(settings) as client:
        for bucket in (BUCKET, OVERRIDE_BUCKET):
            await client.create_bucket(Bucket=bucket)
            await client.put_bucket_cors(Bucket=bucket, CORSConfiguration=PAGE_DOWNLOADS_CORS)
