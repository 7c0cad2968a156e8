"""Named SQL queries, loaded once from ``queries.sql``.

Callers say ``QUERIES["claim_job"]``; there is no SQL built from strings anywhere else.
"""

from __future__ import annotations

import re
from importlib.resources import files
from types import MappingProxyType
from typing import Final

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a file of ``-- name: x`` blocks into ``{name: sql}`` (comments and trailing ';' dropped)."""
    queries: dict[str, str] = {}
    marks = list(_NAME.finditer(text))
    for i, mark in enumerate(marks):
        body = text[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("--")]
        sql = "\n".join(lines).strip().rstrip(";").strip()
        if mark.group(1) in queries:
            raise ValueError(f"query {mark.group(1)!r} is defined twice")
        queries[mark.group(1)] = sql
    return queries


QUERIES: Final = MappingProxyType(
    parse_queries(files(__package__).joinpath("queries.sql").read_text("utf-8"))
)
