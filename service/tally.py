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
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import pyarrow as pa
import pyarrow.csv as pacsv

#: Bytes fed but not yet parsed before ``feed`` waits (about two COPY-sized reads of pyarrow's).
BUFFER_LIMIT: Final = 4 * 1024 * 1024
#: Bytes pyarrow parses at a time.
BLOCK_SIZE: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Columns:
    """Which columns of a dataset hold the currency and the figures that are totalled."""

    currency: str
    cost: str
    requests: str
    tokens: str
    errors: str


NATIVE_COLUMNS: Final = Columns("currency", "cost_total", "request_count", "tokens_total", "error_count")


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
    below what the reader waits for."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._limit = limit
        self._cond = threading.Condition()
        self._chunks: deque[memoryview] = deque()
        self._size = 0
        self._ended = False  # no more bytes will come
        self._abandoned = False  # the reader stopped: whatever comes is dropped
        self._awaited = 0  # bytes the reader is blocked waiting for
        self.room = asyncio.Event()

    # --- the event loop's side

    def push(self, chunk: bytes) -> None:
        with self._cond:
            if self._abandoned:
                return
            self._chunks.append(memoryview(chunk))
            self._size += len(chunk)
            self._cond.notify()

    def full(self) -> bool:
        with self._cond:
            return self._size >= max(self._limit, self._awaited) and not self._abandoned

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify()

    # --- the reader thread's side (the file object pyarrow reads)

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._ended and (size is None or size < 0 or self._size < size):
                self._awaited = size if size is not None and size >= 0 else sys.maxsize
                self._loop.call_soon_threadsafe(self.room.set)
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
                self._loop.call_soon_threadsafe(self.room.set)
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


class Tally:
    """Feed it an export's CSV (header first) with :meth:`feed`, then :meth:`finish` for the
    totals; :meth:`abandon` on any other path. One tally per attempt."""

    def __init__(self, columns: Columns = NATIVE_COLUMNS, limit: int = BUFFER_LIMIT) -> None:
        self._columns = columns
        self._loop = loop = asyncio.get_running_loop()
        self._buffer = _Buffer(loop, limit)
        self._done: asyncio.Future[Totals] = loop.create_future()
        self._thread = threading.Thread(target=self._read, name="export-tally", daemon=True)
        self._thread.start()

    async def feed(self, chunk: bytes) -> None:
        self._buffer.push(chunk)
        while self._buffer.full():
            self._buffer.room.clear()
            if not self._buffer.full():
                break
            await self._buffer.room.wait()

    async def finish(self) -> Totals:
        """The totals of every byte fed (raises :class:`TallyError` if they were not the CSV)."""
        self._buffer.end()
        return await asyncio.shield(self._done)

    async def abandon(self) -> None:
        """Stop reading and wait for the thread to end (whatever it was doing)."""
        self._buffer.end()
        self._buffer.abandon()
        await asyncio.wait([self._done])
        await asyncio.to_thread(self._thread.join)
        if not self._done.cancelled():
            self._done.exception()  # retrieved: an abandoned tally's error is nobody's news

    def _read(self) -> None:
        loop = self._loop
        try:
            totals = self._count()
        except BaseException as exc:  # reported to the loop, never lost in the thread
            self._buffer.abandon()
            error = TallyError(f"could not total the exported rows: {type(exc).__name__}: {exc}")
            loop.call_soon_threadsafe(_settle, self._done, None, error)
        else:
            loop.call_soon_threadsafe(_settle, self._done, totals, None)

    def _count(self) -> Totals:
        c = self._columns
        types = {c.currency: pa.string(), c.cost: pa.decimal128(38, 6)}
        types |= {name: pa.int64() for name in (c.requests, c.tokens, c.errors)}
        reader = pacsv.open_csv(
            self._buffer,
            read_options=pacsv.ReadOptions(block_size=BLOCK_SIZE, use_threads=False),
            # A model id may hold a line break inside quotes.
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(types), column_types=types, strings_can_be_null=False
            ),
        )
        rows = 0
        sums: dict[str, CurrencyTotals] = {}
        aggregates = [(name, "sum") for name in (c.cost, c.requests, c.tokens, c.errors)]
        for batch in reader:
            rows += batch.num_rows
            grouped = pa.Table.from_batches([batch]).group_by(c.currency).aggregate(aggregates)
            for group in grouped.to_pylist():
                found = CurrencyTotals(
                    group[f"{c.cost}_sum"],
                    group[f"{c.requests}_sum"],
                    group[f"{c.tokens}_sum"],
                    group[f"{c.errors}_sum"],
                )
                currency = group[c.currency]
                sums[currency] = sums[currency] + found if currency in sums else found
        return Totals(rows, dict(sorted(sums.items())))


def _settle(future: asyncio.Future[Totals], totals: Totals | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert totals is not None
        future.set_result(totals)
