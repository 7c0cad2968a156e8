"""Known rollup data for tests, and the CSV an export of it must produce, computed independently
of the service (Python, Decimal) so a reconciliation test compares two separate derivations."""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

HEADER = [
    "bucket_start",
    "organization_id",
    "model_id",
    "request_count",
    "tokens_total",
    "error_count",
    "cost_total",
    "currency",
]
MICRO = Decimal("0.000001")
#: Model ids that stress CSV quoting and encoding, next to ordinary ones.
TRICKY_MODELS = (
    "gpt-4o",
    "claude-3,5",
    'say "hi"',
    "multi\nline",
    "modèle-日本",
    "Zeta",
    "alpha",
    # formula-injection attempts: exported as text, with a leading quote
    '=HYPERLINK("http://x")',
    "+1",
    "-2",
    "@SUM(A1)",
    "\tTab",
    "\rCR",
    # a formula behind white space, or behind a list separator some spreadsheets split cells on
    " =1+1",
    "a;=cmd|' /C calc'!A0",
    "b\t+1",
    "c, -2",
    "d;;@SUM(1)",
    "e\n=1",
)
#: White space a spreadsheet skips before reading a formula.
_SPACE = " \t\r\n\f\v"
_LEADING_FORMULA = re.compile(rf"[{_SPACE}]*[=+@-]|[\t\r]")
_SEPARATED_FORMULA = re.compile(rf"([,;\t\r\n])([{_SPACE}]*)([=+@-])")


def csv_safe(text: str) -> str:
    """What analytics.csv_safe makes of a text cell (the oracle of the exact-bytes tests)."""
    quoted = "'" + text if _LEADING_FORMULA.match(text) else text
    return _SEPARATED_FORMULA.sub(r"\1\2'\3", quoted)


def formula_cells(text: str) -> list[str]:
    """The cells of ``text`` that a spreadsheet splitting on ',', ';' or tab (or lines) would read
    as a formula: what no exported text cell may contain."""
    pieces = re.split(r"[,;\t\r\n]", text)
    return [piece for piece in pieces if piece.lstrip(_SPACE)[:1] in ("=", "+", "-", "@")]


@dataclass(frozen=True, slots=True)
class Rollup:
    bucket_start: datetime
    org_id: uuid.UUID
    model_id: str
    request_count: int
    tokens_total: int
    error_count: int
    cost_total: Decimal
    currency: str = "USD"

    def record(self) -> tuple[object, ...]:
        """The row in the rollup tables' column order."""
        return (
            self.bucket_start,
            self.org_id,
            self.model_id,
            self.request_count,
            self.tokens_total,
            self.error_count,
            self.cost_total,
            self.currency,
        )


def hourly_rollups(
    org_id: uuid.UUID, start: datetime, hours: int, models: Sequence[str], seed: int = 7
) -> list[Rollup]:
    rng = random.Random(seed)
    rows = []
    for h in range(hours):
        for model in models:
            requests = rng.randint(0, 5000)
            cost = Decimal(rng.randint(-2_000_000, 90_000_000_000)) * MICRO  # credits can be negative
            rows.append(
                Rollup(
                    start + timedelta(hours=h),
                    org_id,
                    model,
                    requests,
                    requests * rng.randint(50, 900),
                    rng.randint(0, requests // 10 + 1),
                    cost,
                )
            )
    return rows


def _aggregate(rows: Iterable[Rollup], bucket: Callable[[datetime], datetime]) -> list[Rollup]:
    """Sums per bucket, org, model and currency (money of two currencies is never added up)."""
    sums: dict[tuple[datetime, uuid.UUID, str, str], Rollup] = {}
    for r in rows:
        key = (bucket(r.bucket_start), r.org_id, r.model_id, r.currency)
        acc = sums.get(key)
        sums[key] = (
            replace(r, bucket_start=key[0])
            if acc is None
            else replace(
                acc,
                request_count=acc.request_count + r.request_count,
                tokens_total=acc.tokens_total + r.tokens_total,
                error_count=acc.error_count + r.error_count,
                cost_total=acc.cost_total + r.cost_total,
            )
        )
    return list(sums.values())


def daily_from_hourly(rows: Iterable[Rollup]) -> list[Rollup]:
    return _aggregate(rows, lambda t: t.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0))


async def insert(conn: asyncpg.Connection, table: str, rows: Iterable[Rollup]) -> None:
    await conn.copy_records_to_table(table, schema_name="analytics", records=[r.record() for r in rows])


def csv_row(r: Rollup) -> list[str]:
    return [
        r.bucket_start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        str(r.org_id),
        csv_safe(r.model_id),
        str(r.request_count),
        str(r.tokens_total),
        str(r.error_count),
        format(r.cost_total.quantize(MICRO), "f"),
        r.currency,
    ]


def expected_rows(
    hourly: Sequence[Rollup],
    *,
    org_id: uuid.UUID,
    granularity: str,
    start: datetime,
    end: datetime,
    models: Sequence[str] | None,
) -> list[list[str]]:
    """What the CSV must hold, derived from the hourly rollups alone (the truth the daily ones sum):
    the hours wholly inside ``[start, end)``, as they are (hourly) or summed per UTC day or month,
    model and currency, ordered by time, model id (code point order), then currency."""
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if first < start:
        first += timedelta(hours=1)
    last = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    chosen = [
        r
        for r in hourly
        if r.org_id == org_id and first <= r.bucket_start < last and (not models or r.model_id in models)
    ]
    if granularity == "daily":
        chosen = _aggregate(chosen, lambda t: t.astimezone(UTC).replace(hour=0, minute=0, second=0))
    elif granularity == "monthly":
        chosen = _aggregate(chosen, lambda t: t.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0))
    chosen.sort(key=lambda r: (r.bucket_start, r.model_id.encode(), r.currency))
    return [csv_row(r) for r in chosen]


async def execute(database_url: str, *statements: str) -> None:
    """Run ``statements`` on a connection of their own, in order (a schema change in a test)."""
    conn = await asyncpg.connect(database_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()
