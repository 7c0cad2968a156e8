"""Daily exports: the COPY of a daily UTC export, before and now, beside the least work.

    .venv/bin/python -m bench.daily_export [--sizes typical,small,large] [--rounds 7] [--out FILE]

A fresh migrated database (bench.run's), one org per size with bench.run's hourly rollups and daily
rollups that are exactly their per-UTC-day sums (bench.restatement_check's seeding). Per size, on
one connection, each path once untimed (ours and before hashed), then ``--rounds`` rounds, rotating
order, each the wall time of ``COPY (query) TO STDOUT CSV HEADER`` (asyncpg ``copy_from_query``, in
a read-only repeatable-read transaction as the worker's, bytes dropped) of a daily UTC export from
noon on the first day to noon on the last (half days at both ends):

- ``ours``    rollups.sql ``export_daily`` (its 8 parameters): the whole days from daily_rollups,
              the edge hours from hourly_rollups by two sargable ranges;
- ``before``  the old export_daily (6 parameters) calling the old covered_days function (commit
              ``6a6e062``, created here as ``analytics.bench_covered_days``), whose edge-hour
              filter ``NOT (bucket_start >= whole.s AND bucket_start < whole.e)`` reads every hour;
- ``limit``   the floor: the whole days' daily rollups alone, formatted as the export's columns.

Ours and before must write the same bytes (the run fails otherwise).
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final

import asyncpg

from bench.restatement_check import END, seed
from bench.run import START, sized_main
from service.repository import whole_days
from service.rollups import DEFAULT_TABLES
from service.sql import rollup_queries
from tests.support.rollups import execute

#: The export queries of the tables this bench makes (`--with-rollups`).
ROLLUP_QUERIES = rollup_queries(DEFAULT_TABLES.placeholders())

PATHS: Final = ("ours", "before", "limit")
FIRST: Final = START + timedelta(hours=12)  # noon of the first day ...
LAST: Final = END - timedelta(hours=12)  # ... to noon of the last

#: The old functions (migrations/0015_currency.up.sql at 6a6e062) under bench names; covered_local
#: only so that the old query's other branch (any zone but UTC) plans.
OLD_FUNCTIONS: Final = (
    """
CREATE FUNCTION analytics.bench_covered_days(org uuid, first timestamptz, last timestamptz, models text[])
RETURNS TABLE (day timestamptz, org_id uuid, model_id text, request_count bigint, tokens_total bigint,
               error_count bigint, cost_total numeric, currency char(3))
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH whole AS (
        SELECT CASE WHEN start_day = first THEN first ELSE start_day + interval '24 hours' END AS s,
               date_trunc('day', last AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS e
        FROM (SELECT date_trunc('day', first AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS start_day) AS d
    )
    SELECT r.bucket_start, r.org_id, r.model_id, r.request_count, r.tokens_total, r.error_count,
           r.cost_total, r.currency
    FROM analytics.daily_rollups r, whole
    WHERE r.org_id = org AND r.bucket_start >= whole.s AND r.bucket_start < whole.e
      AND (models IS NULL OR r.model_id = ANY (models))
    UNION ALL
    SELECT date_trunc('day', h.bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', h.org_id, h.model_id,
           sum(h.request_count)::bigint, sum(h.tokens_total)::bigint, sum(h.error_count)::bigint,
           sum(h.cost_total), h.currency
    FROM analytics.hourly_rollups h, whole
    WHERE h.org_id = org AND h.bucket_start >= first AND h.bucket_start < last
      AND NOT (h.bucket_start >= whole.s AND h.bucket_start < whole.e)
      AND (models IS NULL OR h.model_id = ANY (models))
    GROUP BY 1, h.org_id, h.model_id, h.currency
$$
""",
    """
CREATE FUNCTION analytics.bench_covered_local(
    org uuid, first timestamptz, last timestamptz, models text[], tz text, unit text
)
RETURNS TABLE (bucket timestamptz, org_id uuid, model_id text, request_count bigint, tokens_total bigint,
               error_count bigint, cost_total numeric, currency char(3))
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT date_trunc(unit, h.bucket_start AT TIME ZONE tz) AT TIME ZONE tz, h.org_id, h.model_id,
           sum(h.request_count)::bigint, sum(h.tokens_total)::bigint, sum(h.error_count)::bigint,
           sum(h.cost_total), h.currency
    FROM analytics.hourly_rollups h
    WHERE h.org_id = org AND h.bucket_start >= first AND h.bucket_start < last
      AND (models IS NULL OR h.model_id = ANY (models))
    GROUP BY 1, h.org_id, h.model_id, h.currency
$$
""",
)
#: The old export_daily (service/sql/queries.sql at 6a6e062): org, first, last, models, zone, guarded.
BEFORE: Final = """
SELECT analytics.rfc3339_in(day, $5) AS bucket_start,
       org_id AS organization_id,
       CASE WHEN $6 THEN analytics.csv_safe(model_id) ELSE model_id END AS model_id,
       request_count, tokens_total, error_count, cost_total, currency
FROM (
    SELECT * FROM analytics.bench_covered_days($1, $2, $3, $4::text[]) WHERE $5::text = 'UTC'
    UNION ALL
    SELECT * FROM analytics.bench_covered_local($1, $2, $3, $4::text[], $5::text, 'day')
    WHERE $5::text <> 'UTC'
) AS days
ORDER BY day, model_id COLLATE "C", currency
"""
#: The whole days [$2, $3) of org $1 from daily_rollups alone, in the export's columns and order (the
#: table's columns qualified: bare, ORDER BY would name the formatted output columns).
LIMIT: Final = """
SELECT analytics.rfc3339_in(d.bucket_start, 'UTC') AS bucket_start, d.org_id AS organization_id,
       analytics.csv_safe(d.model_id) AS model_id, d.request_count, d.tokens_total, d.error_count,
       d.cost_total, d.currency::text AS currency
FROM analytics.daily_rollups d
WHERE d.org_id = $1 AND d.bucket_start >= $2 AND d.bucket_start < $3
ORDER BY d.bucket_start, d.model_id COLLATE "C", d.currency COLLATE "C"
"""


def arguments(org: uuid.UUID) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """Each path's query and parameters."""
    whole = whole_days(FIRST, LAST)
    return {
        "ours": (ROLLUP_QUERIES["export_daily"], (org, FIRST, LAST, None, *whole, "UTC", True)),
        "before": (BEFORE, (org, FIRST, LAST, None, "UTC", True)),
        "limit": (LIMIT, (org, *whole)),
    }


async def measure_size(url: str, org: uuid.UUID, rounds: int, problems: list[str]) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        queries = arguments(org)

        async def copy(path: str, output: Callable[[bytes], Any]) -> tuple[float, int]:
            query, args = queries[path]
            began = time.perf_counter()
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                status = await conn.copy_from_query(query, *args, output=output, format="csv", header=True)
            return (time.perf_counter() - began) * 1000, int(status.split()[-1])

        async def dropped(data: bytes) -> None:
            pass

        rows, digests = dict[str, int](), dict[str, str]()
        for path in PATHS:  # untimed: the hashes, and a warm cache for every path
            digest = hashlib.sha256()

            async def hashed(data: bytes, digest: Any = digest) -> None:
                digest.update(data)

            rows[path] = (await copy(path, hashed))[1]
            digests[path] = digest.hexdigest()
        identical = digests["ours"] == digests["before"]
        if not identical:
            problems.append(f"{org}: ours {digests['ours']} and before {digests['before']} differ")
        ms: dict[str, list[float]] = {path: [] for path in PATHS}
        for round_ in range(1, rounds + 1):
            for path in PATHS[round_ % len(PATHS) :] + PATHS[: round_ % len(PATHS)]:
                elapsed, count = await copy(path, dropped)
                ms[path].append(elapsed)
                if count != rows[path]:
                    problems.append(f"{org}: {path} copied {count} rows, not {rows[path]} (round {round_})")
        return {
            "rows": rows,
            "sha256": digests,
            "identical": identical,
            "ms": ms,
            **{f"{p}_median_ms": statistics.median(v) for p, v in ms.items()},
            **{f"{p}_min_ms": min(v) for p, v in ms.items()},
        }
    finally:
        await conn.close()


def table(sizes: list[str], seeded: dict[str, Any], results: dict[str, Any]) -> str:
    head = (
        "| size (hourly rows) | export rows | limit rows | ours ms | before ms | limit ms"
        " | ours/limit | before/limit | ours/before | identical |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    line = "| {} ({:,}) | {:,} | {:,} | {:.1f} | {:.1f} | {:.1f} | {:.2f}x | {:.2f}x | {:.2f}x | {} |"
    rows = []
    for size in sizes:
        r = results[size]
        med = {p: r[f"{p}_median_ms"] for p in PATHS}
        rows.append(
            line.format(
                size, seeded[size]["rows"], r["rows"]["ours"], r["rows"]["limit"],
                med["ours"], med["before"], med["limit"],
                med["ours"] / med["limit"], med["before"] / med["limit"], med["ours"] / med["before"],
                "yes" if r["identical"] else "**no**",
            )
        )  # fmt: skip
    return "\n".join([head, *rows])


async def bench(url: str, sizes: list[str], rounds: int, problems: list[str]) -> dict[str, Any]:
    orgs = {size: uuid.uuid4() for size in sizes}
    seeded = await seed(url, orgs)
    await execute(url, *OLD_FUNCTIONS)
    results = {s: await measure_size(url, orgs[s], rounds, problems) for s in sizes}
    return {"seeded": seeded, "results": results}


def main(argv: list[str] | None = None) -> int:
    return sized_main(
        argv,
        prog="python -m bench.daily_export",
        description=__doc__,
        out="daily_exports.json",
        measure=bench,
        table=lambda sizes, run: table(sizes, run["seeded"], run["results"]),
        period=(FIRST, LAST),
    )


if __name__ == "__main__":
    sys.exit(main())
