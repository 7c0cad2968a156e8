"""`analytics-exports export --wait --download` against the real processes, as a newcomer runs it."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import BIN
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.usefixtures("clean_state")


def export(stack: Stack, env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "analytics-exports"), "export", *args],
        env={**stack.env, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def verify(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "analytics-exports"), "verify", "export.csv", "--manifest", "export.csv.manifest.json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_export_waits_with_progress_downloads_and_verifies_the_file(
    stack: Stack, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # Given demo data and the three variables `make run` prints
    org = stack.seed_demo("--days", "10", "--models", "3")
    env = {"API": stack.base, "TOKEN": stack.token(org), "ORG": str(org)}

    # When the command line client asks for a daily export, waits for it and downloads it
    result = export(
        stack,
        env,
        tmp_path,
        *("--start", "2026-01-01T00:00:00Z", "--end", "2026-01-01T00:00:00Z"),
        "--granularity",
        "daily",
    )
    # (a request the API refuses is one clear line and exit status 2)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(
        "analytics-exports export: the API answered 400 Request validation failed"
    )
    assert "Traceback" not in result.stderr

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = (end - timedelta(days=7)).replace(hour=0)
    result = export(
        stack,
        env,
        tmp_path,
        *("--start", f"{start:%Y-%m-%dT%H:%M:%SZ}", "--end", f"{end:%Y-%m-%dT%H:%M:%SZ}"),
        *("--granularity", "daily", "--wait", "--download", "export.csv", "--timeout", "90s"),
    )

    # Then it succeeds, and the file it saved is the one the API vouches for
    assert result.returncode == 0, result.stdout + result.stderr
    job_id = result.stdout.splitlines()[0].split()[1].rstrip(":")
    async with http.get(f"{stack.exports_url(org)}/{job_id}", headers=stack.auth(org)) as reply:
        assert reply.status == 200
        job = await reply.json()
    assert job["status"] == "succeeded"
    data = (tmp_path / "export.csv").read_bytes()
    assert hashlib.sha256(data).hexdigest() == job["checksum"]
    assert len(data) == job["byteCount"]
    assert data.count(b"\n") - 1 == job["rowCount"] > 0

    # And the output says what happened, in the words a finance user needs
    out = result.stdout
    assert out.splitlines()[0] == f"export {job_id}: pending"
    assert f"export {job_id}: succeeded after" in out
    assert f"rows      {job['rowCount']:,}" in out
    assert f"checksum  sha256 {job['checksum']}" in out
    assert f"download  {stack.settings.s3_endpoint}/" in out
    assert f"saved     export.csv: {len(data):,} bytes, SHA-256 matches the API's checksum" in out
    # with, not on a terminal, one progress line per change of status or attempt, on stderr
    progress = [line.split("  ") for line in result.stderr.splitlines()]
    assert all(line[0] == f"export {job_id[:8]}" for line in progress), result.stderr
    changes = [(line[1], line[2] if line[2].startswith("attempt") else None) for line in progress]
    assert changes[0] == ("pending", None), result.stderr
    assert changes[-1] == ("succeeded", "attempt 1"), result.stderr
    assert all(a != b for a, b in itertools.pairwise(changes)), result.stderr
    assert f"{job['rowCount']:,} rows" in progress[-1], result.stderr
    assert "\r" not in result.stderr
    assert not (tmp_path / "export.csv.part").exists()

    # And the manifest the job vouches for is kept beside the file, its totals the file's own
    manifest = (tmp_path / "export.csv.manifest.json").read_bytes()
    assert hashlib.sha256(manifest).hexdigest() == job["manifestChecksum"]
    cost = sum(Decimal(row["cost_total"]) for row in csv.DictReader(io.StringIO(data.decode(), newline="")))
    assert orjson.loads(manifest)["totals"]["USD"]["costTotal"] == str(cost)
    assert f"manifest  export.csv.manifest.json: rows and totals match (cost {cost} USD)" in out

    # When `verify` checks the file against it, and then a copy with one cent changed
    checked = verify(tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.endswith("verified: export.csv matches export.csv.manifest.json\n")
    first = next(r for r in csv.reader(io.StringIO(data.decode(), newline="")) if r[6] != "cost_total")
    bumped = Decimal(first[6]) + Decimal("0.01")
    changed = data.replace(f",{first[6]},".encode(), f",{bumped},".encode(), 1)
    (tmp_path / "export.csv").write_bytes(changed)
    checked = verify(tmp_path)
    # Then it fails, naming the cent
    assert checked.returncode == 1
    assert f"MISMATCH  USD costTotal: the file has {cost + Decimal('0.01')}, the manifest states {cost}" in (
        checked.stdout
    )


@pytest.mark.parametrize(
    ("output_format", "schema"),
    [("csv.gz", "native"), ("parquet", "native"), ("csv", "focus-1.0"), ("parquet", "focus-1.0")],
)
def test_every_format_and_schema_is_downloaded_and_verified(
    stack: Stack, tmp_path: Path, output_format: str, schema: str
) -> None:
    # Given demo data
    org = stack.seed_demo("--days", "3", "--models", "4")
    env = {"API": stack.base, "TOKEN": stack.token(org), "ORG": str(org)}
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=2)
    # When the command line client asks for the format and downloads the file
    target = f"export.{output_format}"
    result = export(
        stack,
        env,
        tmp_path,
        *("--start", f"{start:%Y-%m-%dT%H:%M:%SZ}", "--end", f"{end:%Y-%m-%dT%H:%M:%SZ}"),
        *("--granularity", "hourly", "--format", output_format, "--schema", schema),
        *("--download", target, "--timeout", "90s"),
    )
    # Then the file and its manifest match, as `verify` confirms on its own
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"manifest  {target}.manifest.json: rows and totals match (cost " in result.stdout
    command = [str(BIN / "analytics-exports"), "verify", target, "--manifest", f"{target}.manifest.json"]
    checked = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok        rows: 192" in checked.stdout  # 48 hours x 4 models
    # And one byte changed in the middle of the file is caught
    data = bytearray((tmp_path / target).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / target).write_bytes(bytes(data))
    checked = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "MISMATCH  sha256: the file has " in checked.stdout
