"""README's walkthrough, run verbatim with bash against the real processes."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.support.docblocks import marked_block, run_bash

pytestmark = pytest.mark.usefixtures("clean_state")
README = Path(__file__).resolve().parents[2] / "README.md"


def run_walkthrough(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the README's walkthrough block with bash, as a user pasting it would; it must succeed
    and end with the file checked against the API's checksum."""
    result = run_bash(marked_block(README, "walkthrough"), env, cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "export.csv: OK" in result.stdout
    return result


def test_readme_walkthrough_works_verbatim(stack: Stack, tmp_path: Path) -> None:
    # Given demo data, as `make run` seeds it, and the three variables `make run` prints
    org = stack.seed_demo()
    env = {**stack.env, "TOKEN": stack.token(org), "ORG": str(org), "API": stack.base}

    # When the README's commands run in a shell, then every step works and the file checks out
    run_walkthrough(env, tmp_path)
    rows = list(csv.reader(io.StringIO((tmp_path / "export.csv").read_text("utf-8"), newline="")))
    assert rows[0][:3] == ["bucket_start", "organization_id", "model_id"]
    assert len(rows) > 1
    assert {row[1] for row in rows[1:]} == {str(org)}
