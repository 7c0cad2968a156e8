"""``analytics-exports verify``: check a downloaded export against its manifest, from the bytes up.

Everything is recomputed from the file alone, independently of the worker's code: its size and
SHA-256 (and, for a compressed file, those of its content), its rows, and every total per
currency, summed exactly (``Decimal``; Python's csv module, or pyarrow for Parquet). Any
difference is named.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Final, Protocol

import orjson

from service.formats import COLUMNS, Columns
from service.job import DatasetSchema

CHUNK: Final = 1 << 20


class VerificationError(Exception):
    """The manifest or the file cannot be read as an export (not a mismatch: a wrong input)."""


@dataclass
class Report:
    """What was checked: ``checks`` that held, ``problems`` that did not."""

    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def compare(self, what: str, found: object, stated: object) -> None:
        if found == stated:
            self.checks.append(f"{what}: {found}")
        else:
            self.problems.append(f"{what}: the file has {found}, the manifest states {stated}")

    @property
    def ok(self) -> bool:
        return not self.problems


def load_manifest(path: Path) -> dict[str, object]:
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise VerificationError(f"cannot read the manifest {path}: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise VerificationError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("manifestVersion") != 1:
        raise VerificationError(f"{path} is not an export manifest (manifestVersion 1)")
    return document


def verify(file: Path, manifest: Mapping[str, object]) -> Report:
    """Check ``file`` against the one file and the totals ``manifest`` states."""
    files = manifest.get("files")
    request = manifest.get("request")
    if not isinstance(files, list) or len(files) != 1 or not isinstance(request, dict):
        raise VerificationError("the manifest must describe exactly one file and its request")
    stated: dict[str, object] = files[0]
    try:
        schema = DatasetSchema(str(request.get("schema")))
    except ValueError:
        raise VerificationError(f"cannot verify files of schema {request.get('schema')!r}") from None
    report = Report()
    size, digest = _fingerprint(file)
    report.compare("bytes", size, stated.get("bytes"))
    report.compare("sha256", digest, stated.get("sha256"))
    encoding = stated.get("contentEncoding")
    if encoding == "gzip":
        try:
            with gzip.open(file, "rb") as content:
                size, digest = _fingerprint_stream(content)
        except (OSError, EOFError, zlib.error) as exc:
            report.problems.append(f"content: the file is not the gzip it should be ({exc})")
            return report
        uncompressed = stated.get("uncompressed")
        if not isinstance(uncompressed, dict):
            raise VerificationError("the manifest's files[0].uncompressed is missing")
        report.compare("uncompressed bytes", size, uncompressed.get("bytes"))
        report.compare("uncompressed sha256", digest, uncompressed.get("sha256"))
    elif encoding is not None:
        raise VerificationError(f"unknown contentEncoding {encoding!r}")
    try:
        if str(request.get("format")) == "parquet":
            rows, totals = _parquet_totals(file, COLUMNS[schema])
        else:
            opener = gzip.open if encoding == "gzip" else open
            with opener(file, "rt", encoding="utf-8", newline="") as text:
                rows, totals = _csv_totals(text, COLUMNS[schema])
    except (VerificationError, UnicodeDecodeError) as exc:
        if report.ok:
            raise VerificationError(str(exc)) from exc  # the right bytes, yet unreadable: a wrong input
        report.problems.append(f"content: cannot be read ({exc})")  # the bytes differ: that is why
        return report
    report.compare("rows", rows, stated.get("rows"))
    stated_totals = manifest.get("totals")
    if not isinstance(stated_totals, dict):
        raise VerificationError("the manifest's totals are missing")
    report.compare("currencies", sorted(totals), sorted(stated_totals))
    for currency, figures in sorted(totals.items()):
        claimed = stated_totals.get(currency)
        if not isinstance(claimed, dict):
            continue  # already reported as a currency difference
        try:
            claimed_cost = Decimal(str(claimed.get("costTotal")))
        except InvalidOperation:
            claimed_cost = None
        report.compare(f"{currency} costTotal", figures[0], claimed_cost)
        for index, name in enumerate(("requestCount", "tokensTotal", "errorCount"), start=1):
            report.compare(f"{currency} {name}", figures[index], claimed.get(name))
    return report


def _fingerprint(path: Path) -> tuple[int, str]:
    try:
        with path.open("rb") as stream:
            return _fingerprint_stream(stream)
    except OSError as exc:
        raise VerificationError(f"cannot read {path}: {exc.strerror or exc}") from exc


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _fingerprint_stream(stream: _Readable) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


Totals = dict[str, list[Decimal | int]]


def _add(totals: Totals, currency: str, cost: Decimal, requests: int, tokens: int, errors: int) -> None:
    entry = totals.setdefault(currency, [Decimal("0.000000"), 0, 0, 0])
    for index, value in enumerate((cost, requests, tokens, errors)):
        entry[index] += value  # type: ignore[operator]


def _csv_totals(text: io.TextIOBase | IO[str], columns: Columns) -> tuple[int, Totals]:
    reader = csv.DictReader(text)
    missing = {columns.currency, columns.cost, columns.requests, columns.tokens, columns.errors} - set(
        reader.fieldnames or ()
    )
    if missing:
        raise VerificationError(f"the file has no column {', '.join(sorted(missing))}")
    rows, totals = 0, Totals()
    try:
        for row in reader:
            rows += 1
            _add(
                totals,
                row[columns.currency],
                Decimal(row[columns.cost]),
                _whole(row[columns.requests]),
                _whole(row[columns.tokens]),
                _whole(row[columns.errors]),
            )
    except (InvalidOperation, ValueError, csv.Error) as exc:
        raise VerificationError(f"row {rows} is not a valid export row: {exc}") from exc
    return rows, totals


def _whole(text: str) -> int:
    """An integer column (FOCUS writes quantities as decimals: ``3514800.000000``)."""
    value = Decimal(text)
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number")
    return int(value)


def _parquet_totals(path: Path, columns: Columns) -> tuple[int, Totals]:
    import pyarrow.parquet as pq

    names = [columns.currency, columns.cost, columns.requests, columns.tokens, columns.errors]
    try:
        parquet = pq.ParquetFile(path)
        batches: Iterator[object] = parquet.iter_batches(columns=names)
        rows, totals = 0, Totals()
        for batch in batches:
            for row in batch.to_pylist():  # type: ignore[attr-defined]
                rows += 1
                _add(
                    totals,
                    row[columns.currency],
                    Decimal(row[columns.cost]),
                    _whole(str(row[columns.requests])),
                    _whole(str(row[columns.tokens])),
                    _whole(str(row[columns.errors])),
                )
    except (OSError, ValueError, KeyError) as exc:
        raise VerificationError(f"cannot read {path} as the export's Parquet: {exc}") from exc
    return rows, totals
