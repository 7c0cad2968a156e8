"""Restatement checks: what comparing a delivered export's totals costs, beside the least work.

    .venv/bin/python -m bench.restatement_check [--sizes typical,small,large] [--rounds 7] [--out FILE]

A fresh migrated database (bench.run's), one org per size with bench.run's hourly rollups and daily
rollups that are exactly their per-UTC-day sums. Per size, on one connection (a pool of one), each
path untimed WARMUPS times (the plan cache's steady state), then ``--rounds`` rounds, rotating order:

- ``ours_hourly``    JobRepository.period_totals of an hourly job over the month (pool acquire included);
- ``limit_hourly``   the bare aggregate over hourly_rollups, same range;
- ``ours_daily``     period_totals of a daily UTC job from mid-day to mid-day (as covered_days counts:
                     the whole days from daily_rollups, the two half days from their hours);
- ``limit_daily``    one aggregate of the whole days' daily rollups UNION ALL only the edge hours;
  (both limits planned for their parameters, as ours are);
- ``export_hourly``  COPY of the hourly job's export query (CSV, as the worker asks), bytes dropped.

Ours must return the limit's totals, and the daily job's totals the hours' (the run fails otherwise).
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from datetime import timedelta
from typing import Any, Final

import asyncpg

from bench.run import HOURS, SEED_HOURLY, SIZES, START, sized_main
from service.job import ExportRequest, Granularity, Job
from service.repository import JobRepository, create_pool
from service.rollups import DEFAULT_TABLES
from service.sql import QUERIES, rollup_queries

#: The export queries of the tables this bench makes (`--with-rollups`).
ROLLUP_QUERIES = rollup_queries(DEFAULT_TABLES.placeholders())

END: Final = START + timedelta(hours=HOURS)
#: A prepared statement's first 5 executions get custom plans, then PostgreSQL may settle on a generic
#: one (plan_cache_mode auto): the steady state of a pool connection, so what is measured.
WARMUPS: Final = 6
PATHS: Final = ("ours_hourly", "limit_hourly", "ours_daily", "limit_daily", "export_hourly")
SEED_DAILY: Final = """
INSERT INTO analytics.daily_rollups
    (bucket_start, org_id, model_id, request_count, tokens_total, error_count, cost_total, currency)
SELECT date_trunc('day', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', org_id, model_id,
       sum(request_count), sum(tokens_total), sum(error_count), sum(cost_total), currency
FROM analytics.hourly_rollups GROUP BY 1, org_id, model_id, currency
"""
TOTALS: Final = (
    "SELECT currency, sum(cost_total), sum(request_count)::bigint, sum(tokens_total)::bigint,"
    " sum(error_count)::bigint FROM ({}) AS counted GROUP BY currency"
)
COLUMNS: Final = "SELECT currency, cost_total, request_count, tokens_total, error_count"
LIMIT_HOURLY: Final = TOTALS.format(
    f"{COLUMNS} FROM analytics.hourly_rollups WHERE org_id = $1 AND bucket_start >= $2 AND bucket_start < $3"
)
#: Hours [$2, $4) and [$5, $3), whole days [$4, $5): two index ranges, no hour of a whole day read.
LIMIT_DAILY: Final = TOTALS.format(
    f"{COLUMNS} FROM analytics.daily_rollups WHERE org_id = $1 AND bucket_start >= $4 AND bucket_start < $5"
    f" UNION ALL {COLUMNS} FROM analytics.hourly_rollups WHERE org_id = $1"
    " AND ((bucket_start >= $2 AND bucket_start < $4) OR (bucket_start >= $5 AND bucket_start < $3))"
)


def totals(rows: list[asyncpg.Record]) -> dict[str, tuple[Any, ...]]:
    return {row[0]: tuple(row[1:]) for row in rows}


async def seed(url: str, orgs: dict[str, uuid.UUID]) -> dict[str, Any]:
    conn, seeded = await asyncpg.connect(url), dict[str, Any]()
    for size, org in orgs.items():
        began = time.perf_counter()
        status = await conn.execute(SEED_HOURLY, org, SIZES[size], START, HOURS, timeout=1800)
        seeded[size] = {"org_id": str(org), "rows": int(status.split()[-1])}
        seeded[size]["seed_s"] = round(time.perf_counter() - began, 1)
    seeded["daily_rows"] = int((await conn.execute(SEED_DAILY, timeout=1800)).split()[-1])
    for table in ("hourly_rollups", "daily_rollups"):
        await conn.execute(f"VACUUM (ANALYZE) analytics.{table}", timeout=1800)
    await conn.close()
    return seeded


async def measure_size(url: str, org: uuid.UUID, rounds: int, problems: list[str]) -> dict[str, Any]:
    pool = await create_pool(url, max_size=1)
    try:
        repository = JobRepository(pool, tables=DEFAULT_TABLES)
        first, last = START + timedelta(hours=12), END - timedelta(hours=12)  # mid-day to mid-day
        days = (START + timedelta(days=1), END - timedelta(days=1))
        jobs = {
            "ours_hourly": ExportRequest(org, "bench", START, END, Granularity.HOURLY, None),
            "ours_daily": ExportRequest(org, "bench", first, last, Granularity.DAILY, None),
        }
        job: dict[str, Job] = {path: (await repository.create(req)).job for path, req in jobs.items()}
        copied = [0]  # CSV bytes of the last COPY, dropped as they come

        async def sink(data: bytes) -> None:
            copied[0] += len(data)

        async def query(path: str, conn: Any) -> Any:
            if path.startswith("limit_"):  # the best plan for these parameters, as ours gets
                async with conn.transaction(readonly=True):
                    await conn.execute(QUERIES["custom_plans"])
                    if path == "limit_hourly":
                        return totals(await conn.fetch(LIMIT_HOURLY, org, START, END))
                    return totals(await conn.fetch(LIMIT_DAILY, org, first, last, *days))
            copied[0] = 0
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                status = await conn.copy_from_query(
                    ROLLUP_QUERIES["export_hourly"], org, START, END, None, "UTC", True,
                    output=sink, format="csv", header=True,
                )  # fmt: skip
            return int(status.split()[-1])

        async def timed(path: str) -> tuple[float, Any]:
            if path in job:  # ours: the repository acquires the pool's one connection itself
                began = time.perf_counter()
                result = await repository.period_totals(job[path])
                return (time.perf_counter() - began) * 1000, result
            async with pool.acquire() as conn:  # the same connection, acquired outside the timing
                began = time.perf_counter()
                result = await query(path, conn)
                return (time.perf_counter() - began) * 1000, result

        warmup = {p: [await timed(p) for _ in range(1 if p == "export_hourly" else WARMUPS)] for p in PATHS}
        warm = {path: runs[0][1] for path, runs in warmup.items()}
        for ours, limit in (("ours_hourly", "limit_hourly"), ("ours_daily", "limit_daily")):
            if warm[ours] != warm[limit]:
                problems.append(f"{org}: {ours} {warm[ours]} differs from {limit} {warm[limit]}")
        from_hours = totals(await pool.fetch(LIMIT_HOURLY, org, first, last))
        if warm["ours_daily"] != from_hours:
            problems.append(f"{org}: the daily job's totals differ from its hours' {from_hours}")
        ms: dict[str, list[float]] = {path: [] for path in PATHS}
        for index in range(rounds):
            for path in PATHS[index % len(PATHS) :] + PATHS[: index % len(PATHS)]:
                elapsed, result = await timed(path)
                ms[path].append(elapsed)
                if result != warm[path]:
                    problems.append(f"{org}: {path} returned {result} in round {index + 1}")
        return {
            "export_rows": warm["export_hourly"],
            "export_mib": round(copied[0] / 2**20, 1),  # of the last round's COPY
            "ms": ms,
            "warmup_ms": {path: [elapsed for elapsed, _ in runs] for path, runs in warmup.items()},
            **{f"{p}_median_ms": statistics.median(v) for p, v in ms.items()},
            **{f"{p}_min_ms": min(v) for p, v in ms.items()},
        }
    finally:
        await pool.close()


def table(size: str, r: dict[str, Any]) -> str:
    med, low = ({p: r[f"{p}_{m}_ms"] for p in PATHS} for m in ("median", "min"))
    pairs = {"ours_hourly": ("limit_hourly", "export_hourly"), "ours_daily": ("limit_daily",)}
    against = {
        a: "; ".join(f"{med[a] / med[b]:.2f}x {b} ({low[a] / low[b]:.2f}x of the mins)" for b in bs)
        for a, bs in pairs.items()
    }
    head = f"{size}: {r['export_rows']:,} hourly rows ({r['export_mib']} MiB of CSV)\n\n"
    head += "| path | median ms | min ms | median against | per s, one connection |\n|---|---:|---:|---|---:|"
    line = "| {0} | {1:.2f} | {2:.2f} | {3} | {4:,.1f} |"
    rows = [line.format(p, med[p], low[p], against.get(p, ""), 1000 / med[p]) for p in PATHS]
    return "\n".join([head, *rows])


async def bench(url: str, sizes: list[str], rounds: int, problems: list[str]) -> dict[str, Any]:
    orgs = {size: uuid.uuid4() for size in sizes}
    seeded = await seed(url, orgs)
    results = {s: await measure_size(url, orgs[s], rounds, problems) for s in sizes}
    return {"seeded": seeded, "results": results}


def main(argv: list[str] | None = None) -> int:
    return sized_main(
        argv,
        prog="python -m bench.restatement_check",
        description=__doc__,
        out="restatements.json",
        measure=bench,
        table=lambda sizes, run: "\n\n".join(table(size, run["results"][size]) for size in sizes),
        period=(START, END),
    )


if __name__ == "__main__":
    sys.exit(main())
