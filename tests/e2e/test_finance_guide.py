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

import asyncpg
import pytest

from service.api.auth import READ
from tests.e2e.conftest import Stack
from tests.support.docblocks import marked_block, run_bash
from tests.support.rollups import HEADER

pytestmark = pytest.mark.usefixtures("clean_state")
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "metrics" / "report.md"
#: The script reads these when set; the developer's own shell must not steer the test.
OPTIONAL_VARIABLES = ("MONTH", "GRANULARITY", "KEY")
PERIOD = re.compile(r"^period: (\S+) to (\S+), (\w+); Idempotency-Key: (\S+)$", re.M)
JOB = re.compile(r"^job: ([0-9a-f-]{36})$", re.M)
RECONCILED = re.compile(r"^reconciled: (\d+) rows, total cost (-?\d+\.\d{6})$")


def last_month() -> str:
    return (datetime.now(UTC).replace(day=1) - timedelta(days=1)).strftime("%Y-%m")


def guide_env(stack: Stack, org: uuid.UUID, token: str | None = None, **extra: str) -> dict[str, str]:
    """What `make run` prints (API, TOKEN, ORG), and nothing else the script would read."""
    env = {k: v for k, v in stack.env.items() if k not in OPTIONAL_VARIABLES}
    return {**env, "API": stack.base, "TOKEN": token or stack.token(org), "ORG": str(org), **extra}


def run_guide(env: dict[str, str], cwd: Path) -> dict[str, str]:
    """Run the guide's block; it must succeed, verify the file and end with its reconciliation.
    Returns what it printed: the period, the job and the reconciled rows and cost."""
    result = run_bash(marked_block(GUIDE, "finance-guide"), env, cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "export.csv: OK" in result.stdout.splitlines()
    period, job = PERIOD.search(result.stdout), JOB.search(result.stdout)
    reconciled = RECONCILED.match(result.stdout.splitlines()[-1])
    assert period, result.stdout
    assert job, result.stdout
    assert reconciled, result.stdout
    return {
        "start": period[1],
        "end": period[2],
        "granularity": period[3],
        "key": period[4],
        "job": job[1],
        "rows": reconciled[1],
        "cost": reconciled[2],
    }


def rollup_figures(
    stack: Stack, table: str, org: uuid.UUID, start: str, end: str
) -> tuple[int, Decimal, int]:
    """Rows, total cost and distinct models of the org's rollups in [start, end), as PostgreSQL
    sums them."""

    async def query() -> tuple[int, Decimal, int]:
        conn = await asyncpg.connect(stack.settings.database_url)
        try:
            row = await conn.fetchrow(
                f"""SELECT count(*), coalesce(sum(cost_total), 0), count(DISTINCT model_id)
                    FROM analytics.{table}
                    WHERE org_id = $1 AND bucket_start >= $2 AND bucket_start < $3""",
                org,
                datetime.fromisoformat(start),
                datetime.fromisoformat(end),
            )
        finally:
            await conn.close()
        return row[0], row[1], row[2]

    return asyncio.run(query())


def file_cost(path: Path) -> tuple[int, Decimal]:
    """Rows and total cost of a downloaded CSV, summed here with Decimal."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER
    return len(rows) - 1, sum((Decimal(row[6]) for row in rows[1:]), Decimal(0))


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
    assert (daily["start"], daily["granularity"], daily["key"]) == (
        f"{month}-01T00:00:00Z",
        "daily",
        f"month-end-{month}-daily",
    )
    # And its figures are exactly the rollup tables' (computed apart from the script)
    rows, cost, models = rollup_figures(stack, "daily_rollups", org, daily["start"], daily["end"])
    assert rows > 0
    assert (int(daily["rows"]), Decimal(daily["cost"])) == (rows, cost)
    # And what it left for the archive is the exact file the API vouches for, with its record
    folder = tmp_path / "exports" / month / "daily"
    assert file_cost(folder / "export.csv") == (rows, cost)
    job = json.loads((folder / "job.json").read_text())
    assert job["jobId"] == daily["job"]
    assert job["status"] == "succeeded"
    assert job["rowCount"] == rows
    assert hashlib.sha256((folder / "export.csv").read_bytes()).hexdigest() == job["checksum"]
    assert (folder / "export.csv.sha256").read_text() == f"{job['checksum']}  export.csv\n"
    events = [e["event"] for e in json.loads((folder / "events.json").read_text())["items"]]
    assert events[:3] == ["created", "started", "succeeded"]
    assert "download_url_issued" in events
    assert sorted(os.listdir(folder)) == ["events.json", "export.csv", "export.csv.sha256", "job.json"]

    # When it runs again (a retry, or a colleague the same day)
    again = run_guide(env, tmp_path)
    # Then the Idempotency-Key returns the same job: one export, the same figures
    assert again == daily

    # When the same month is exported hourly and monthly, as the guide's cross-check says
    hourly = run_guide({**env, "GRANULARITY": "hourly"}, tmp_path)
    monthly = run_guide({**env, "GRANULARITY": "monthly"}, tmp_path)
    # Then the totals are identical, and each file has the rows its granularity means
    assert hourly["cost"] == monthly["cost"] == daily["cost"]
    hourly_rows, hourly_cost, _ = rollup_figures(stack, "hourly_rollups", org, daily["start"], daily["end"])
    assert (int(hourly["rows"]), Decimal(hourly["cost"])) == (hourly_rows, hourly_cost)
    assert int(monthly["rows"]) == models
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
    assert (empty["rows"], empty["cost"]) == ("0", "0.000000")
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
