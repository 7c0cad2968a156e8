"""The rollup tables against a real PostgreSQL: the catalog check finds what an export needs, names
what is missing, and the API refuses to start on tables that lack it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from service.repository import check_rollup_tables
from service.rollups import DEFAULT_TABLES, RollupTables
from tests.conftest import ADMIN_DATABASE_URL, BIN, RABBITMQ_URL, fresh_database
from tests.support.rollups import execute


async def test_the_migrated_tables_serve_exports(database_url: str) -> None:
    assert await check_rollup_tables(database_url, DEFAULT_TABLES) == []


async def test_views_over_the_rollups_serve_exports_and_are_read_as_tables(database_url: str) -> None:
    # A platform may expose its rollups as views (a continuous aggregate is one); the check
    # reads a view's columns and grants and asks no index of it
    schema = f"platform_{uuid.uuid4().hex[:8]}"
    await execute(
        database_url,
        f"CREATE SCHEMA {schema}",
        f"CREATE VIEW {schema}.hourly AS SELECT * FROM analytics.hourly_rollups",
        f"CREATE VIEW {schema}.daily AS SELECT org_id, bucket_start, model_id, cost_total"
        " FROM analytics.daily_rollups",
    )
    try:
        assert await check_rollup_tables(
            database_url, RollupTables(f"{schema}.hourly", f"{schema}.daily")
        ) == [
            f"{schema}.daily has no column request_count (bigint)",
            f"{schema}.daily has no column tokens_total (bigint)",
            f"{schema}.daily has no column error_count (bigint)",
            f"{schema}.daily has no column currency (character(3))",
        ]
    finally:
        await execute(database_url, f"DROP SCHEMA {schema} CASCADE")


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


def test_columns_the_service_user_may_not_read_are_named() -> None:
    # Given a database user with SELECT on the daily table and on all but two needed columns of
    # the hourly one (a grant the platform's administrator made by hand)
    role = f"exports_reader_{uuid.uuid4().hex[:8]}"
    try:
        with fresh_database("analytics_grants") as database_url:
            asyncio.run(
                execute(
                    database_url,
                    f"CREATE ROLE {role} LOGIN",
                    f"GRANT USAGE ON SCHEMA analytics TO {role}",
                    f"GRANT SELECT ON analytics.daily_rollups TO {role}",
                    f"GRANT SELECT (bucket_start, org_id, model_id, request_count, tokens_total, error_count)"
                    f" ON analytics.hourly_rollups TO {role}",
                )
            )
            parts = urlsplit(database_url)
            as_reader = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
            # When that user checks the tables, then exactly what it may not read is named
            assert asyncio.run(check_rollup_tables(as_reader, DEFAULT_TABLES)) == [
                "the database user may not SELECT cost_total, currency of analytics.hourly_rollups"
            ]
            # ... and, with ROLLUP_PRUNE, that it may not delete either
            pruned = RollupTables(pruned=True)
            assert asyncio.run(check_rollup_tables(as_reader, pruned))[1:] == [
                "ROLLUP_PRUNE=true, but the database user may not delete rows of analytics.hourly_rollups",
                "ROLLUP_PRUNE=true, but the database user may not delete rows of analytics.daily_rollups",
            ]
            asyncio.run(execute(database_url, f"GRANT DELETE ON analytics.daily_rollups TO {role}"))
            assert len(asyncio.run(check_rollup_tables(as_reader, pruned))) == 2
    finally:
        asyncio.run(execute(ADMIN_DATABASE_URL, f"DROP ROLE IF EXISTS {role}"))


async def test_domains_partial_indexes_and_materialized_views_are_judged_by_what_they_are(
    database_url: str,
) -> None:
    schema = f"platform_{uuid.uuid4().hex[:8]}"
    await execute(
        database_url,
        f"CREATE SCHEMA {schema}",
        f"CREATE DOMAIN {schema}.money6 AS numeric(20,6)",
        # a domain over the right type is that type; a partial index cannot serve every org
        f"CREATE TABLE {schema}.hourly (bucket_start timestamptz(0), org_id uuid, model_id text,"
        f" request_count bigint, tokens_total bigint, error_count bigint, cost_total {schema}.money6,"
        " currency varchar)",
        f"CREATE INDEX ON {schema}.hourly (org_id, bucket_start) WHERE org_id IS NOT NULL",
        # a materialized view with its own index serves exports, but no rows can be pruned from it
        f"CREATE MATERIALIZED VIEW {schema}.daily AS SELECT * FROM analytics.daily_rollups",
        f"CREATE INDEX ON {schema}.daily (org_id, bucket_start)",
    )
    try:
        tables = RollupTables(f"{schema}.hourly", f"{schema}.daily")
        assert await check_rollup_tables(database_url, tables) == [
            f"{schema}.hourly has no index on (org_id, bucket_start, ...) for the exports' range scans"
        ]
        assert await check_rollup_tables(
            database_url, RollupTables(tables.hourly, tables.daily, pruned=True)
        ) == [
            f"{schema}.hourly has no index on (org_id, bucket_start, ...) for the exports' range scans",
            f"{schema}.daily is not a table: ROLLUP_PRUNE=true prunes tables only",
        ]
    finally:
        await execute(database_url, f"DROP SCHEMA {schema} CASCADE")
