"""Totals of an export, counted from the very rows it streams: per currency, the exact sums of
cost, requests, tokens and errors, and the number of rows.

The CSV that PostgreSQL's COPY sends to the upload is fed, chunk by chunk, to a pyarrow CSV
reader in a thread of its own (C++ parsing and summing, no Python per row), so the totals
describe exactly the bytes written and cost no second query. The thread reads from a bounded
buffer: when it falls behind, :meth:`Tally.feed` waits, as the upload does.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from service.formats import COLUMNS, Columns
from service.job import DatasetSchema

#: Bytes fed but not yet parsed before ``feed`` waits (eight of pyarrow's blocks).
BUFFER_LIMIT: Final = 1024 * 1024
#: Bytes pyarrow parses at a time. Its reader holds about forty blocks' worth of memory (read
#: ahead, parsed, converted): 128 KiB keeps that near 17 MiB, where 1 MiB took 50, at the same
#: CPU per byte (measured in docs/performance.md).
BLOCK_SIZE: Final = 128 * 1024
#: Rows per Parquet row group (about 10 MB of Arrow data in memory at a time).
ROW_GROUP_ROWS: Final = 100_000


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    cost_total: Decimal
    request_count: int
    tokens_total: int
    error_count: int

    def __add__(self, other: CurrencyTotals) -> CurrencyTotals:
        return CurrencyTotals(
            self.cost_total + other.cost_total,
            self.request_count + other.request_count,
            self.tokens_total + other.tokens_total,
            self.error_count + other.error_count,
        )


@dataclass(frozen=True, slots=True)
class Totals:
    rows: int
    #: Currency code -> its totals; rows of two currencies are never added together.
    by_currency: Mapping[str, CurrencyTotals]


class TallyError(Exception):
    """The streamed bytes could not be read as the export's CSV (a bug, never bad input)."""


class _Buffer:
    """Bytes handed over from the event loop to the reader thread. ``read(n)`` blocks the thread
    until ``n`` bytes (or the end) arrived, as a file's would (pyarrow takes a short read for the
    end of a block); the loop learns through ``room`` when it may send more: below ``limit``, or
    below what the reader waits for. Each side wakes the other only when it waits: the reader
    when the bytes it waits for are there, the loop when it found the buffer full (a wake-up per
    COPY chunk cost the loop a fifth of a second per 150 MB)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._limit = limit
        self._cond = threading.Condition()
        self._chunks: deque[memoryview] = deque()
        self._size = 0
        self._ended = False  # no more bytes will come
        self._abandoned = False  # the reader stopped: whatever comes is dropped
        self._awaited = 0  # bytes the reader is blocked waiting for
        self._loop_waits = False  # the loop found the buffer full and waits for room
        self.room = asyncio.Event()

    # --- the event loop's side

    def push(self, chunk: bytes) -> None:
        with self._cond:
            if self._abandoned:
                return
            self._chunks.append(memoryview(chunk))
            self._size += len(chunk)
            if self._awaited and self._size >= self._awaited:
                self._cond.notify()

    def full(self) -> bool:
        """Whether the loop must wait for ``room`` (then the reader sets it when there is)."""
        with self._cond:
            self._loop_waits = self._size >= max(self._limit, self._awaited) and not self._abandoned
            return self._loop_waits

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify()

    # --- the reader thread's side (the file object pyarrow reads)

    def _make_room(self) -> None:
        if self._loop_waits:
            self._loop_waits = False
            self._loop.call_soon_threadsafe(self.room.set)

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._ended and (size is None or size < 0 or self._size < size):
                self._awaited = size if size is not None and size >= 0 else sys.maxsize
                self._make_room()  # the loop may wait for a full buffer that is not enough
                self._cond.wait()
            self._awaited = 0
            wanted = self._size if size is None or size < 0 else size
            pieces: list[memoryview] = []
            taken = 0
            while self._chunks and taken < wanted:
                head = self._chunks[0]
                if len(head) <= wanted - taken:
                    pieces.append(self._chunks.popleft())
                    taken += len(head)
                else:
                    pieces.append(head[: wanted - taken])
                    self._chunks[0] = head[wanted - taken :]
                    taken = wanted
            self._size -= taken
            if self._size < self._limit:
                self._make_room()
            return b"".join(pieces)

    def abandon(self) -> None:
        with self._cond:
            self._abandoned = True
            self._chunks.clear()
            self._size = 0
        self._loop.call_soon_threadsafe(self.room.set)

    @property
    def closed(self) -> bool:
        return False

    def readable(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class ParquetOutput:
    """Also write the rows as Parquet: every column typed by ``schema`` (in the CSV's order),
    zstd-compressed, in row groups of about ``row_group_rows``; the file's bytes go to ``sink``,
    awaited on the event loop (an upload's ``write``: its backpressure holds the reader)."""

    schema: pa.Schema
    sink: Callable[[bytes], Coroutine[Any, Any, None]]
    row_group_rows: int = ROW_GROUP_ROWS


class Tally:
    """Feed it an export's CSV (header first) with :meth:`feed`, then :meth:`finish` for the
    totals; :meth:`abandon` on any other path. One tally per attempt. With ``parquet``, the same
    reader also writes the rows as Parquet; a failure of its sink ends the tally with that error."""

    def __init__(
        self,
        columns: Columns = COLUMNS[DatasetSchema.NATIVE],
        *,
        parquet: ParquetOutput | None = None,
        limit: int = BUFFER_LIMIT,
    ) -> None:
        self._columns = columns
        self._parquet = parquet
        self._loop = loop = asyncio.get_running_loop()
        self._buffer = _Buffer(loop, limit)
        self._done: asyncio.Future[Totals] = loop.create_future()
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._read, name="export-tally", daemon=True)
        self._thread.start()

    async def feed(self, chunk: bytes) -> None:
        """Hand over one chunk; waits while the reader is behind. Raises at once what ended the
        reader early (its output failed, or the bytes are not the CSV)."""
        self._raise_if_failed()
        self._buffer.push(chunk)
        while self._buffer.full():
            self._buffer.room.clear()
            if not self._buffer.full():
                break
            await self._buffer.room.wait()
        self._raise_if_failed()

    async def finish(self) -> Totals:
        """The totals of every byte fed, once the Parquet output (if any) is complete."""
        self._buffer.end()
        return await asyncio.shield(self._done)

    async def abandon(self) -> None:
        """Stop reading (and writing) and wait for the thread to end, whatever it was doing."""
        self._abandoned.set()
        self._buffer.end()
        self._buffer.abandon()
        await asyncio.wait([self._done])
        await asyncio.to_thread(self._thread.join)
        if not self._done.cancelled():
            self._done.exception()  # retrieved: an abandoned tally's error is nobody's news

    def _raise_if_failed(self) -> None:
        if self._abandoned.is_set():
            return
        if self._done.done() and self._done.exception() is not None:
            raise self._done.exception()  # type: ignore[misc]

    def _read(self) -> None:
        loop = self._loop
        output = _Output(self._parquet.sink, loop, self._abandoned) if self._parquet is not None else None
        try:
            totals = self._count(output)
        except BaseException as exc:  # reported to the loop, never lost in the thread
            self._buffer.abandon()
            error = (
                output.failure
                if output is not None and output.failure is not None
                else TallyError(f"could not total the exported rows: {type(exc).__name__}: {exc}")
            )
            loop.call_soon_threadsafe(_settle, self._done, None, error)
        else:
            loop.call_soon_threadsafe(_settle, self._done, totals, None)

    def _count(self, output: _Output | None) -> Totals:
        c = self._columns
        if self._parquet is not None:
            types = {field.name: field.type for field in self._parquet.schema}
            include: list[str] = []  # every column, in the file's order
        else:
            types = {c.currency: pa.string(), c.cost: pa.decimal128(38, 6)}
            types |= {name: pa.int64() for name in (c.requests, c.tokens, c.errors)}
            if c.focus:  # tokens as a FOCUS quantity, six decimals
                types[c.tokens] = pa.decimal128(38, 6)
            include = list(types)
        reader = pacsv.open_csv(
            self._buffer,
            read_options=pacsv.ReadOptions(block_size=BLOCK_SIZE, use_threads=False),
            # A model id may hold a line break inside quotes.
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                include_columns=include, column_types=types, strings_can_be_null=c.focus
            ),
        )
        writer = None
        if output is not None and self._parquet is not None:
            import pyarrow.parquet as pq  # only a Parquet export pays for loading it

            writer = pq.ParquetWriter(output, self._parquet.schema, compression="zstd")
        group_rows = self._parquet.row_group_rows if self._parquet is not None else 0
        rows = 0
        sums: dict[str, CurrencyTotals] = {}
        waiting: list[pa.RecordBatch] = []
        for batch in reader:
            rows += batch.num_rows
            for currency, found in _batch_totals(batch, c):
                sums[currency] = sums[currency] + found if currency in sums else found
            if writer is not None:
                waiting.append(batch)
                if sum(b.num_rows for b in waiting) >= group_rows:
                    writer.write_table(pa.Table.from_batches(waiting), row_group_size=group_rows)
                    waiting = []
        if writer is not None:
            if waiting:
                writer.write_table(pa.Table.from_batches(waiting), row_group_size=group_rows)
            writer.close()
        return Totals(rows, dict(sorted(sums.items())))


def _batch_totals(batch: pa.RecordBatch, c: Columns) -> list[tuple[str, CurrencyTotals]]:
    """A batch's totals per currency: plain sums when the batch holds one currency, as nearly
    every batch does, else the sums of each currency's rows (a grouping engine per batch would
    cost more than the sums)."""
    currencies = batch.column(c.currency)
    unique = pc.unique(currencies).to_pylist()
    found = []
    for currency in unique:
        rows = batch if len(unique) == 1 else batch.filter(pc.equal(currencies, currency))
        found.append(
            (
                currency,
                CurrencyTotals(
                    Decimal(pc.sum(rows.column(c.cost)).as_py() or 0),
                    int(pc.sum(rows.column(c.requests)).as_py() or 0),
                    int(pc.sum(rows.column(c.tokens)).as_py() or 0),
                    int(pc.sum(rows.column(c.errors)).as_py() or 0),
                ),
            )
        )
    return found


class _Output:
    """The file object the ParquetWriter writes to, in the reader thread: each write is awaited on
    the event loop (the sink's backpressure holds the thread), and stops once the tally is
    abandoned."""

    def __init__(
        self,
        sink: Callable[[bytes], Coroutine[Any, Any, None]],
        loop: asyncio.AbstractEventLoop,
        abandoned: threading.Event,
    ) -> None:
        self._sink = sink
        self._loop = loop
        self._abandoned = abandoned
        self._position = 0
        #: What the sink raised: the export's error (an S3 failure, a cancel), not the tally's.
        self.failure: BaseException | None = None
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        if self._abandoned.is_set():
            raise TallyError("abandoned")
        try:
            asyncio.run_coroutine_threadsafe(self._sink(bytes(data)), self._loop).result()
        except BaseException as exc:
            self.failure = exc
            raise
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True


def _settle(future: asyncio.Future[Totals], totals: Totals | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert totals is not None
        future.set_result(totals)
