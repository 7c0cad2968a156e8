"""FOCUS datasets made by the real processes pass the FinOps Foundation's FOCUS validator
(focus-validator 1.0.0, in .venv-focus: `make focus-validator`), for every granularity, as CSV
and as csv.gz once decompressed."""

from __future__ import annotations

import gzip
import subprocess
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.e2e.conftest import Stack, create_export, download, wait_for_job

pytestmark = pytest.mark.usefixtures("clean_state")
ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / ".venv-focus" / "bin" / "focus-validator"
#: Rules skipped because they contradict the ratified FOCUS 1.0 specification (each says why).
OVERRIDES = ROOT / "tests" / "support" / "focus_overrides.yaml"


def site_packages() -> Path:
    [found] = (ROOT / ".venv-focus" / "lib").glob("python3*/site-packages")
    return found


def validate(data: Path, report: Path) -> ET.Element:
    """Run the validator and return its JUnit report. It exits 0 whether or not the data passes,
    and opens its currency list relative to the working directory: run it from site-packages."""
    assert VALIDATOR.exists(), "the FOCUS validator is not installed: `make focus-validator`"
    command = [str(VALIDATOR), "--data-file", str(data), "--validate-version", "1.0"]
    command += ["--override-file", str(OVERRIDES), "--output-type", "unittest"]
    result = subprocess.run(
        [*command, "--output-destination", str(report)],
        cwd=site_packages(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert report.exists(), result.stdout + result.stderr
    return ET.parse(report).getroot()  # noqa: S314 (the validator's own report)


def failures(root: ET.Element) -> list[str]:
    return [
        f"{case.get('name')}: {element.get('message')}"
        for case in root.iter("testcase")
        for element in case
        if element.tag in ("failure", "error")
    ]


@pytest.mark.parametrize("granularity", ["hourly", "daily", "monthly"])
@pytest.mark.parametrize("output_format", ["csv", "csv.gz"])
async def test_focus_exports_pass_the_focus_validator(
    stack: Stack, http: aiohttp.ClientSession, tmp_path: Path, granularity: str, output_format: str
) -> None:
    # Given demo data, one model of which is billed in EUR, and a negative usage adjustment
    org = stack.seed_demo("--days", "3", "--models", "3")
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute(
            "UPDATE analytics.hourly_rollups SET currency = 'EUR' WHERE org_id = $1 AND model_id = 'gpt-4o'",
            org,
        )
        await conn.execute(
            "UPDATE analytics.hourly_rollups SET cost_total = -cost_total"
            " WHERE org_id = $1 AND bucket_start = (SELECT min(bucket_start) FROM analytics.hourly_rollups"
            " WHERE org_id = $1)",
            org,
        )
    finally:
        await conn.close()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    body = {
        "timeRange": {
            "start": f"{end - timedelta(days=2, hours=5):%Y-%m-%dT%H:%M:%SZ}",
            "end": f"{end:%Y-%m-%dT%H:%M:%SZ}",
        },
        "granularity": granularity,
        "schema": "focus-1.0",
        "format": output_format,
    }
    # When the worker exports it as FOCUS
    job = await wait_for_job(http, stack, org, str((await create_export(http, stack, org, body))["jobId"]))
    assert job["status"] == "succeeded", job
    data = await download(http, stack, org, str(job["jobId"]))
    content = gzip.decompress(data) if output_format == "csv.gz" else data
    assert content.count(b"\n") > 1
    file = tmp_path / f"focus-{uuid.uuid4()}.csv"
    file.write_bytes(content)
    # Then the FOCUS validator finds nothing wrong (only the documented overrides are skipped)
    root = validate(file, tmp_path / "report.xml")
    overridden = sum(1 for line in OVERRIDES.read_text().splitlines() if line.strip().startswith("- "))
    assert failures(root) == []
    assert (root.get("failures"), root.get("errors")) == ("0", "0")
    assert int(root.get("tests") or 0) > 100
    assert int(root.get("skipped") or 0) == overridden
    if (granularity, output_format) == ("hourly", "csv"):
        # And the same file broken (a currency that is not ISO 4217, a charge class FOCUS 1.0 does
        # not know) is reported: the check can fail
        broken = content.replace(b",USD,", b",US$,", 1).replace(b",Usage,,", b",Usage,Regular,", 1)
        file.write_bytes(broken)
        found = failures(validate(file, tmp_path / "broken.xml"))
        assert any(name.startswith("BillingCurrency_") for name in found), found
        assert any(name.startswith("ChargeClass_") for name in found), found
