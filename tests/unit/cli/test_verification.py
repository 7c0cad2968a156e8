"""`analytics-exports verify`: a file against its manifest, every fact recomputed from the bytes."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import orjson
import pytest

from cli.main import main
from tests.support.rollups import HEADER

ROWS = [
    '2026-10-01T00:00:00Z,org,"claude-3,5",10,100,1,1.250000,USD',
    '2026-10-01T00:00:00Z,org,"multi\nline",5,50,0,-0.500000,USD',
    "2026-10-01T01:00:00Z,org,gpt-4o,7,70,2,2.000001,EUR",
]
CSV = (",".join(HEADER) + "\n" + "\n".join(ROWS) + "\n").encode()
TOTALS = {
    "EUR": {"costTotal": "2.000001", "requestCount": 7, "tokensTotal": 70, "errorCount": 2},
    "USD": {"costTotal": "0.750000", "requestCount": 15, "tokensTotal": 150, "errorCount": 1},
}


def write(tmp_path: Path, data: bytes, *, gz: bool = False, **changes: object) -> tuple[Path, Path]:
    stored = gzip.compress(data, mtime=0) if gz else data
    entry: dict[str, object] = {
        "key": "analytics/exports/o/j.csv" + (".gz" if gz else ""),
        "rows": 3,
        "bytes": len(stored),
        "sha256": hashlib.sha256(stored).hexdigest(),
        "contentType": "application/gzip" if gz else "text/csv; charset=utf-8",
        "contentEncoding": "gzip" if gz else None,
    }
    if gz:
        entry["uncompressed"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    document = {
        "manifestVersion": 1,
        "request": {"format": "csv.gz" if gz else "csv", "schema": "native"},
        "files": [entry],
        "totals": TOTALS,
        **changes,
    }
    file, manifest = tmp_path / ("export.csv.gz" if gz else "export.csv"), tmp_path / "manifest.json"
    file.write_bytes(stored)
    manifest.write_bytes(orjson.dumps(document))
    return file, manifest


def verify(file: Path, manifest: Path) -> int:
    return main(["verify", str(file), "--manifest", str(manifest)])


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
def test_a_file_that_matches_its_manifest_is_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gz: bool
) -> None:
    file, manifest = write(tmp_path, CSV, gz=gz)
    assert verify(file, manifest) == 0
    out = capsys.readouterr().out
    assert "ok        rows: 3" in out
    assert "ok        EUR costTotal: 2.000001" in out
    assert "ok        USD costTotal: 0.750000" in out
    assert out.endswith(f"verified: {file} matches {manifest}\n")


def test_one_cent_changed_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file, manifest = write(tmp_path, CSV)
    file.write_bytes(CSV.replace(b"1.250000", b"1.260000"))  # same size, one cent more
    assert verify(file, manifest) == 1
    out = capsys.readouterr().out
    assert "ok        bytes: " in out
    assert "MISMATCH  sha256: the file has " in out
    assert "MISMATCH  USD costTotal: the file has 0.760000, the manifest states 0.750000" in out


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
def test_one_byte_changed_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str], gz: bool) -> None:
    file, manifest = write(tmp_path, CSV, gz=gz)
    stored = bytearray(file.read_bytes())
    stored[-1] ^= 0x01  # the last byte: the CSV's final line break, or the gzip trailer
    file.write_bytes(bytes(stored))
    assert verify(file, manifest) == 1
    assert "MISMATCH  sha256: the file has " in capsys.readouterr().out


def test_a_missing_row_and_a_currency_mixup_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file, manifest = write(tmp_path, CSV)
    file.write_bytes(CSV.replace(b"2.000001,EUR", b"2.000001,USD"))
    assert verify(file, manifest) == 1
    out = capsys.readouterr().out
    assert "MISMATCH  currencies: the file has ['USD'], the manifest states ['EUR', 'USD']" in out
    file.write_bytes(CSV.rsplit(b"\n", 2)[0] + b"\n")
    assert verify(file, manifest) == 1
    assert "MISMATCH  rows: the file has 2, the manifest states 3" in capsys.readouterr().out


def test_an_unreadable_manifest_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file, manifest = write(tmp_path, CSV)
    manifest.write_bytes(b"not json")
    assert verify(file, manifest) == 2
    assert "is not JSON" in capsys.readouterr().err
    assert verify(file, tmp_path / "missing.json") == 2
    assert "cannot read the manifest" in capsys.readouterr().err
