"""The tally against CSV as PostgreSQL writes it: exact per-currency totals, whatever the chunking."""

from __future__ import annotations

import asyncio
import io
import threading
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.errors import RetryableStorageError
from service.formats import parquet_schema
from service.job import DatasetSchema
from service.tally import BLOCK_SIZE, CurrencyTotals, ParquetOutput, Tally, TallyError
from tests.support.rollups import HEADER, TRICKY_MODELS, csv_safe

CURRENCIES = ("USD", "EUR", "USD", "GBP")


def row(n: int) -> list[str]:
    """Data row ``n``: tricky model ids (quotes, line breaks, commas), negative costs, 3 currencies."""
    return [
        f"2026-10-{1 + n % 28:02d}T{n % 24:02d}:00:00Z",
        "org",
        csv_safe(TRICKY_MODELS[n % len(TRICKY_MODELS)]),
        str(n),
        str(n * 100),
        str(n % 3),
        f"{(n * 7919) % 100000 - 2000}.{n:06d}",
        CURRENCIES[n % len(CURRENCIES)],
    ]


ROWS = [row(n) for n in range(1000)]


def csv_bytes(rows: list[list[str]]) -> bytes:
    """CSV as PostgreSQL's COPY writes it: a field is quoted when it holds a comma, a quote, a
    carriage return or a line feed (quotes doubled); lines end with a line feed."""

    def field(value: str) -> str:
        return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\r\n') else value

    return "".join(",".join(map(field, line)) + "\n" for line in [HEADER, *rows]).encode()


def expected(rows: list[list[str]]) -> dict[str, CurrencyTotals]:
    sums: dict[str, CurrencyTotals] = {}
    for row in rows:
        found = CurrencyTotals(Decimal(row[6]), int(row[3]), int(row[4]), int(row[5]))
        sums[row[7]] = sums[row[7]] + found if row[7] in sums else found
    return sums


async def tally_of(data: bytes, chunk: int, limit: int = 1 << 20) -> object:
    tally = Tally(limit=limit)
    for start in range(0, len(data), chunk):
        await tally.feed(data[start : start + chunk])
    return await tally.finish()


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
async def test_totals_are_exact_per_currency_whatever_the_chunks(chunk: int) -> None:
    data = csv_bytes(ROWS)
    totals = await tally_of(data, chunk, limit=64)  # a tiny buffer: feed waits for the reader
    assert totals.rows == len(ROWS)
    assert totals.by_currency == expected(ROWS)
    assert list(totals.by_currency) == ["EUR", "GBP", "USD"]


async def test_batches_of_one_currency_and_of_several_add_up_alike() -> None:
    # Runs of one currency longer than a parsed block, so some blocks hold one currency (summed
    # whole) and the blocks where a run ends hold two (summed per currency).
    rows = [[*row(n)[:7], ("USD", "EUR", "USD")[n * 3 // 12000]] for n in range(12000)]
    assert len(csv_bytes(rows)) > 4 * BLOCK_SIZE
    totals = await tally_of(csv_bytes(rows), 65536)
    assert totals.rows == len(rows)
    assert totals.by_currency == expected(rows)


async def test_a_header_alone_has_no_totals() -> None:
    totals = await tally_of(csv_bytes([]), 5)
    assert (totals.rows, totals.by_currency) == (0, {})


async def test_bytes_that_are_not_the_export_csv_are_an_error() -> None:
    with pytest.raises(TallyError, match="could not total"):
        await tally_of(csv_bytes(ROWS[:3]) + b"2026-10-01T00:00:00Z,org,m,many,1,0,1.0,USD\n", 64)


async def test_an_abandoned_tally_ends_its_thread() -> None:
    tally = Tally(limit=16)
    await tally.feed(csv_bytes(ROWS)[:1000])
    await asyncio.wait_for(tally.abandon(), 5)
    assert not any(t.name == "export-tally" for t in threading.enumerate())
    # feeding after abandon neither blocks nor fails
    await asyncio.wait_for(tally.feed(b"x" * 100), 1)


def test_the_rows_hold_what_must_be_tallied_right() -> None:
    assert {row[7] for row in ROWS} == {"USD", "EUR", "GBP"}
    assert any(row[6].startswith("-") for row in ROWS)
    assert any("\n" in row[2] for row in ROWS)


def parquet_of(written: list[bytes]) -> pa.Table:
    return pq.read_table(io.BytesIO(b"".join(written)))


async def test_parquet_output_holds_the_rows_typed_in_row_groups() -> None:
    written: list[bytes] = []

    async def sink(data: bytes) -> None:
        written.append(data)

    schema = parquet_schema(DatasetSchema.NATIVE, "UTC")
    tally = Tally(parquet=ParquetOutput(schema, sink, row_group_rows=300), limit=4096)
    data = csv_bytes(ROWS)
    for start in range(0, len(data), 999):
        await tally.feed(data[start : start + 999])
    totals = await tally.finish()
    table = parquet_of(written)
    assert table.schema == schema
    assert table.num_rows == totals.rows == len(ROWS)
    assert pq.ParquetFile(io.BytesIO(b"".join(written))).metadata.num_row_groups > 1
    assert [r["cost_total"] for r in table.to_pylist()] == [Decimal(row[6]) for row in ROWS]
    assert totals.by_currency == expected(ROWS)


async def test_a_failing_parquet_sink_ends_the_tally_with_its_own_error() -> None:
    async def sink(data: bytes) -> None:
        raise RetryableStorageError("S3 upload of part 1 failed: SlowDown")

    schema = parquet_schema(DatasetSchema.NATIVE, "UTC")
    tally = Tally(parquet=ParquetOutput(schema, sink, row_group_rows=10), limit=1024)
    data = csv_bytes(ROWS)

    async def export() -> None:
        for start in range(0, len(data), 512):
            await tally.feed(data[start : start + 512])
        await tally.finish()

    with pytest.raises(RetryableStorageError, match="SlowDown"):
        await export()
    await asyncio.wait_for(tally.abandon(), 5)
