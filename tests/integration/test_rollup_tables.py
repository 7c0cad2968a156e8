"""The rollup tables against a real PostgreSQL: the catalog check finds what an export needs, names
what is missing, and the API refuses to start on tables that lack it."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from service.repository import check_rollup_tables
from service.rollups import DEFAULT_TABLES
from tests.conftest import BIN, RABBITMQ_URL, fresh_database
from tests.support.rollups import execute


async def test_the_migrated_tables_serve_exports(database_url: str) -> None:
    assert await check_rollup_tables(database_url, DEFAULT_TABLES) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            "ALTER TABLE analytics.hourly_rollups DROP COLUMN tokens_total",
            "analytics.hourly_rollups has no column tokens_total (bigint)",
        ),
        (
            "ALTER TABLE analytics.daily_rollups ALTER COLUMN cost_total TYPE double precision",
            "analytics.daily_rollups.cost_total is double precision, not numeric",
        ),
        (
            "ALTER TABLE analytics.hourly_rollups DROP CONSTRAINT hourly_rollups_pkey",
            "analytics.hourly_rollups has no index on (org_id, bucket_start, ...)",
        ),
        ("DROP TABLE analytics.daily_rollups", "the rollup table analytics.daily_rollups does not exist"),
    ],
)
def test_what_an_export_needs_and_lacks_is_named_and_the_api_will_not_start(change: str, named: str) -> None:
    with fresh_database("analytics_rollups") as database_url:
        asyncio.run(execute(database_url, change))
        assert named in "; ".join(asyncio.run(check_rollup_tables(database_url, DEFAULT_TABLES)))
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": RABBITMQ_URL,
            "AUTH_JWT_SECRET": "a-test-secret-that-is-long-enough-to-sign-with",
            "METRICS_PORT": "0",
        }
        started = subprocess.run(
            [str(BIN / "analytics-exports"), "api"], env=env, capture_output=True, text=True, timeout=60
        )
    assert started.returncode == 1
    [line] = started.stderr.strip().splitlines()
    assert line.startswith("analytics-exports api: the rollup tables cannot serve exports: ")
    assert named in line
