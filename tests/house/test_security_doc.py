"""docs/security.md names, for each threat, the tests that prove it: every one must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECURITY = ROOT / "docs" / "security.md"


def named_tests() -> list[tuple[str, str]]:
    """(file, test name) for every test the document names: `tests/x.py::name`, `::name` after
    one, or `tests/x.py` (`name`, `name`). A trailing * names a prefix."""
    text = SECURITY.read_text("utf-8")
    named: list[tuple[str, str]] = []
    current = ""
    for match in re.finditer(r"`(tests/[\w/]+\.py)(?:::([\w*]+))?`(?: \(([^)]*)\))?|`::([\w*]+)`", text):
        file, name, listed, again = match.groups()
        if file:
            current = file
            named += [(file, name)] if name else []
            named += [(file, n) for n in re.findall(r"`(\w+)`", listed or "")]
        else:
            named.append((current, again))
    return named


def test_every_test_the_security_doc_names_exists() -> None:
    named = named_tests()
    assert len(named) > 20
    missing = []
    for file, name in named:
        path = ROOT / file
        source = path.read_text("utf-8") if path.exists() else ""
        if f"def {name.rstrip('*')}" not in source:
            missing.append(f"{file}::{name}")
    assert missing == []
