"""The finance guide's month-end script (docs/metrics/report.md), run verbatim with bash against the
real processes, its figures checked independently: against the rollup tables, and by summing the
file it downloaded with Decimal."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from service.api.auth import READ
from tests.e2e.conftest import Stack
from tests.support.docblocks import marked_block, run_bash
from tests.support.rollups import HEADER

pytestmark = pytest.mark.usefixtures("clean_state")
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "metrics" / "report.md"
#: The script reads these when set; the developer's own shell must not steer the test.
OPTIONAL_VARIABLES = ("MONTH", "GRANULARITY", "TIME_ZONE", "KEY")
PERIOD = re.compile(r"^period: (\S+) to (\S+), (\w+), (\S+); Idempotency-Key: (\S+)$", re.M)
JOB = re.compile(r"^job: ([0-9a-f-]{36})$", re.M)
RECONCILED = re.compile(r"^reconciled: (\d+) rows, total cost (.+)$")
COST = re.compile(r"(-?\d+\.\d{6}) ([A-Z]{3})")


def last_month() -> str:
    return (datetime.now(UTC).replace(day=1) - timedelta(days=1)).strftime("%Y-%m")


def guide_env(stack: Stack, org: uuid.UUID, token: str | None = None, **extra: str) -> dict[str, str]:
    """What `make run` prints (API, TOKEN, ORG), and nothing else the script would read."""
    env = {k: v for k, v in stack.env.items() if k not in OPTIONAL_VARIABLES}
    return {**env, "API": stack.base, "TOKEN": token or stack.token(org), "ORG": str(org), **extra}


def costs(printed: str) -> dict[str, Decimal]:
    """The script's total cost per currency: '1.500000 EUR, 2.000000 USD', or '0.000000' for none."""
    if printed == "0.000000":
        return {}
    pairs = printed.split(", ")
    assert all(COST.fullmatch(pair) for pair in pairs), printed
    return {currency: Decimal(amount) for amount, currency in (pair.split(" ") for pair in pairs)}


def run_guide(env: dict[str, str], cwd: Path) -> dict[str, object]:
    """Run the guide's block; it must succeed, verify the file and end with its reconciliation.
    Returns what it printed: the period, the job, the reconciled rows and costs per currency."""
    result = run_bash(marked_block(GUIDE, "finance-guide"), env, cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "export.csv: OK" in result.stdout.splitlines()
    assert "manifest.json: OK" in result.stdout.splitlines()
    period, job = PERIOD.search(result.stdout), JOB.search(result.stdout)
    reconciled = RECONCILED.match(result.stdout.splitlines()[-1])
    assert period, result.stdout
    assert job, result.stdout
    assert reconciled, result.stdout
    return {
        "start": period[1],
        "end": period[2],
        "granularity": period[3],
        "zone": period[4],
        "key": period[5],
        "job": job[1],
        "rows": int(reconciled[1]),
        "costs": costs(reconciled[2]),
    }


def rollup_figures(
    stack: Stack, table: str, org: uuid.UUID, start: str, end: str
) -> tuple[int, dict[str, Decimal], int]:
    """Rows, total cost per currency and distinct (model, currency) pairs of the org's rollups in
    [start, end), as PostgreSQL sums them."""

    async def query() -> tuple[int, dict[str, Decimal], int]:
        conn = await asyncpg.connect(stack.settings.database_url)
        try:
            rows = await conn.fetch(
                f"""SELECT currency, count(*), sum(cost_total), count(DISTINCT model_id)
                    FROM analytics.{table}
                    WHERE org_id = $1 AND bucket_start >= $2 AND bucket_start < $3
                    GROUP BY currency""",
                org,
                datetime.fromisoformat(start),
                datetime.fromisoformat(end),
            )
        finally:
            await conn.close()
        return sum(r[1] for r in rows), {r[0]: r[2] for r in rows}, sum(r[3] for r in rows)

    return asyncio.run(query())


def file_cost(path: Path) -> tuple[int, dict[str, Decimal]]:
    """Rows and total cost per currency of a downloaded CSV, summed here with Decimal."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER
    totals: dict[str, Decimal] = {}
    for row in rows[1:]:
        totals[row[7]] = totals.get(row[7], Decimal(0)) + Decimal(row[6])
    return len(rows) - 1, totals


def test_month_end_script_reconciles_exactly_in_every_granularity(stack: Stack, tmp_path: Path) -> None:
    # Given demo data, as `make run` seeds it, and only the three variables `make run` prints
    org = stack.seed_demo()
    env = guide_env(stack, org)
    month_before = last_month()

    # When finance runs the guide's script as written: last month, daily
    daily = run_guide(env, tmp_path)

    # Then it exported last month, whole UTC days
    month = daily["start"][:7]
    assert month in (month_before, last_month())
    assert (daily["start"], daily["granularity"], daily["zone"], daily["key"]) == (
        f"{month}-01T00:00:00Z",
        "daily",
        "UTC",
        f"month-end-{month}-daily",
    )
    # And its figures are exactly the rollup tables' (computed apart from the script)
    rows, cost, models = rollup_figures(stack, "daily_rollups", org, str(daily["start"]), str(daily["end"]))
    assert rows > 0
    assert list(cost) == ["USD"]
    assert (daily["rows"], daily["costs"]) == (rows, cost)
    # And what it left for the archive is the exact file the API vouches for, with its record
    folder = tmp_path / "exports" / month / "daily"
    assert file_cost(folder / "export.csv") == (rows, cost)
    job = json.loads((folder / "job.json").read_text())
    assert job["jobId"] == daily["job"]
    assert job["status"] == "succeeded"
    assert job["rowCount"] == rows
    assert hashlib.sha256((folder / "export.csv").read_bytes()).hexdigest() == job["checksum"]
    assert (folder / "export.csv.sha256").read_text() == (
        f"{job['checksum']}  export.csv\n{job['manifestChecksum']}  manifest.json\n"
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["totals"]["USD"]["costTotal"] == daily["costs"]["USD"].to_eng_string()
    events = [e["event"] for e in json.loads((folder / "events.json").read_text())["items"]]
    assert events[:3] == ["created", "started", "succeeded"]
    assert "download_url_issued" in events
    assert sorted(os.listdir(folder)) == [
        "events.json",
        "export.csv",
        "export.csv.sha256",
        "job.json",
        "manifest.json",
    ]

    # When it runs again (a retry, or a colleague the same day)
    again = run_guide(env, tmp_path)
    # Then the Idempotency-Key returns the same job: one export, the same figures
    assert again == daily

    # When the same month is exported hourly and monthly, as the guide's cross-check says
    hourly = run_guide({**env, "GRANULARITY": "hourly"}, tmp_path)
    monthly = run_guide({**env, "GRANULARITY": "monthly"}, tmp_path)
    # Then the totals are identical, and each file has the rows its granularity means
    assert hourly["costs"] == monthly["costs"] == daily["costs"]
    hourly_rows, hourly_cost, _ = rollup_figures(
        stack, "hourly_rollups", org, str(daily["start"]), str(daily["end"])
    )
    assert (hourly["rows"], hourly["costs"]) == (hourly_rows, hourly_cost)
    assert monthly["rows"] == models
    assert file_cost(tmp_path / "exports" / month / "monthly" / "export.csv") == (models, cost)
    assert len({daily["job"], hourly["job"], monthly["job"]}) == 3


def test_an_empty_month_reconciles_to_zero(stack: Stack, tmp_path: Path) -> None:
    # Given an org whose usage covers only the last 40 days, and a month half a year ago
    org = stack.seed_demo()
    month = (datetime.now(UTC) - timedelta(days=180)).strftime("%Y-%m")
    # When the script exports that month
    empty = run_guide(guide_env(stack, org, MONTH=month), tmp_path)
    # Then the export succeeded with a header-only file, and the script says so
    assert empty["start"] == f"{month}-01T00:00:00Z"
    assert (empty["rows"], empty["costs"]) == (0, {})
    assert (tmp_path / "exports" / month / "daily" / "export.csv").read_text() == ",".join(HEADER) + "\n"


def test_the_script_stops_with_the_apis_explanation(stack: Stack, tmp_path: Path) -> None:
    # Given a read-only token, which may not request exports
    org = uuid.uuid4()
    env = guide_env(stack, org, token=stack.token(org, scope=READ))
    # When the script runs, then it stops at the request and shows why, as the guide says
    result = run_bash(marked_block(GUIDE, "finance-guide"), env, tmp_path)
    assert result.returncode != 0
    assert "token lacks the exports:write scope" in result.stderr
    assert "reconciled" not in result.stdout


def test_a_month_of_two_currencies_gets_a_total_per_currency(stack: Stack, tmp_path: Path) -> None:
    # Given demo data in USD, where one model is billed in EUR from the fifth day of last month's
    # data on (the demo's 40 days hold at least 9 days of last month)
    org = stack.seed_demo()
    month = last_month()

    async def switch_currency() -> None:
        conn = await asyncpg.connect(stack.settings.database_url)
        try:
            first = await conn.fetchval(
                "SELECT min(bucket_start) FROM analytics.hourly_rollups"
                " WHERE org_id = $1 AND bucket_start >= $2",
                org,
                datetime.fromisoformat(f"{month}-01T00:00:00+00:00"),
            )
            switch = first + timedelta(days=4)
            for table in ("hourly_rollups", "daily_rollups"):
                await conn.execute(
                    f"UPDATE analytics.{table} SET currency = 'EUR'"
                    " WHERE org_id = $1 AND model_id = 'gpt-4o' AND bucket_start >= $2",
                    org,
                    switch,
                )
        finally:
            await conn.close()

    asyncio.run(switch_currency())
    # When the script exports the month, monthly
    monthly = run_guide(guide_env(stack, org, GRANULARITY="monthly"), tmp_path)
    # Then it prints a total per currency, each exactly the rollups' total in that currency, and
    # gpt-4o has a row in each currency
    _, cost, pairs = rollup_figures(stack, "hourly_rollups", org, str(monthly["start"]), str(monthly["end"]))
    assert sorted(cost) == ["EUR", "USD"]
    assert monthly["costs"] == cost
    assert monthly["rows"] == pairs == 9
    assert file_cost(tmp_path / "exports" / month / "monthly" / "export.csv") == (9, cost)


def test_the_script_exports_the_month_of_a_time_zone(stack: Stack, tmp_path: Path) -> None:
    # Given demo data, as `make run` seeds it
    org = stack.seed_demo()
    month = last_month()
    # When the script exports last month in Europe/Berlin, daily
    berlin = run_guide(guide_env(stack, org, TIME_ZONE="Europe/Berlin"), tmp_path)
    # Then the period is the local month, from local midnight to local midnight
    first = datetime.fromisoformat(f"{month}-01").replace(tzinfo=ZoneInfo("Europe/Berlin"))
    assert (berlin["start"], berlin["zone"], berlin["key"]) == (
        first.isoformat(),
        "Europe/Berlin",
        f"month-end-{month}-daily-Europe-Berlin",
    )
    # And its totals are exactly the hourly rollups of those local hours
    _, cost, _ = rollup_figures(stack, "hourly_rollups", org, str(berlin["start"]), str(berlin["end"]))
    assert berlin["costs"] == cost
    folder = tmp_path / "exports" / month / "daily-Europe-Berlin"
    assert file_cost(folder / "export.csv")[1] == cost
    assert json.loads((folder / "job.json").read_text())["timeZone"] == "Europe/Berlin"
