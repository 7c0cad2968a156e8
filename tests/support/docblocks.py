"""Code blocks the docs mark for testing (`<!-- NAME:start -->`, a ```sh or ```python block,
`<!-- NAME:end -->`), and running a shell one verbatim with bash, as a user would."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path


def marked_block(path: Path, name: str, language: str = "sh") -> str:
    """The one ```language block of ``path`` between `<!-- name:start -->` and `<!-- name:end -->`."""
    start, end = re.escape(f"<!-- {name}:start -->"), re.escape(f"<!-- {name}:end -->")
    pattern = rf"{start}\s*```{re.escape(language)}\n(.*?)```\s*{end}"
    blocks = re.findall(pattern, path.read_text("utf-8"), re.DOTALL)
    assert len(blocks) == 1, f"{path.name} must hold exactly one {name} block, found {len(blocks)}"
    return str(blocks[0])


def run_bash(
    script: str, env: Mapping[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with `bash -euo pipefail`, so any failing command fails the run."""
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
