"""Named SQL queries, loaded once from ``queries.sql`` and ``rollups.sql``.

Callers say ``QUERIES["claim_job"]``; there is no SQL built from strings anywhere else. The
queries of the rollup tables (``rollups.sql``) are templates, as settings name those tables:
:func:`rollup_queries` fills them in once per process.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.resources import files
from types import MappingProxyType
from typing import Final

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
#: ``{hourly_rollups}``: a placeholder of a template (a lower-case word, so ``'{}'`` and regular
#: expressions' ``{3}`` are left alone).
PLACEHOLDER: Final = re.compile(r"\{([a-z_]+)\}")


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


def render(templates: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """Every template with its placeholders filled: each ``{name}`` by ``values[name]``, or by the
    template ``name`` itself (a fragment), rendered and in parentheses. An unknown name, or a
    fragment that contains itself, is a ValueError."""

    def fill(name: str, seen: tuple[str, ...]) -> str:
        def one(match: re.Match[str]) -> str:
            key = match.group(1)
            if key in values:
                return values[key]
            if key in seen:
                raise ValueError(f"template {name!r} contains itself through {key!r}")
            if key not in templates:
                raise ValueError(
                    f"template {name!r} names {{{key}}}, which is neither a value nor a template"
                )
            return "(" + fill(key, (*seen, key)) + ")"

        return PLACEHOLDER.sub(one, templates[name])

    return {name: fill(name, (name,)) for name in templates}


def _load(name: str) -> dict[str, str]:
    return parse_queries(files(__package__).joinpath(name).read_text("utf-8"))


QUERIES: Final = MappingProxyType(_load("queries.sql"))
#: The templates of ``rollups.sql``, unfilled.
ROLLUP_TEMPLATES: Final = MappingProxyType(_load("rollups.sql"))


def rollup_queries(values: Mapping[str, str]) -> Mapping[str, str]:
    """The queries of ``rollups.sql`` for the tables ``values`` name
    (:meth:`service.rollups.RollupTables.placeholders`)."""
    return MappingProxyType(render(ROLLUP_TEMPLATES, values))
