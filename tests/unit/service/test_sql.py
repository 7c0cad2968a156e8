"""Named queries: the parser, and that every name the code looks up exists in queries.sql."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.job import Granularity
from service.sql import QUERIES, parse_queries

ROOT = Path(__file__).resolve().parents[3]
SOURCES = sorted(
    path for package in ("service", "actors", "cli", "devtools") for path in (ROOT / package).rglob("*.py")
)

_LOOKUP = re.compile(r"QUERIES\[\s*(?P<expr>[^\]]+?)\s*\]")
_LITERAL = re.compile(r"""^(["'])(?P<name>\w+)\1$""")
_EXPORT_BY_GRANULARITY = re.compile(r"""^f(["'])export_\{job\.granularity\.value\}\1$""")
#: ``JobRepository._one(name, ...)`` and ``_owned(name, ...)`` look up ``QUERIES[name]``: their
#: callers pass literal names.
_ONE_CALL = re.compile(r"""\._(?:one|owned)\(\s*(["'])(?P<name>\w+)\1""")


def used_query_names() -> set[str]:
    """Every query name the service and actors code uses, found by scanning the source."""
    names: set[str] = set()
    for path in SOURCES:
        text = path.read_text("utf-8")
        for lookup in _LOOKUP.finditer(text):
            expr = lookup.group("expr")
            if literal := _LITERAL.match(expr):
                names.add(literal.group("name"))
            elif _EXPORT_BY_GRANULARITY.match(expr):
                names.update(f"export_{g.value}" for g in Granularity)
            elif expr == "name" and path.name == "repository.py":
                pass  # _one(name, ...): its callers are collected below
            else:
                pytest.fail(f"{path.relative_to(ROOT)}: unrecognised query lookup QUERIES[{expr}]")
        names.update(call.group("name") for call in _ONE_CALL.finditer(text))
    return names


def test_parse_queries_splits_named_blocks() -> None:
    # Given a file with a preamble, two blocks, descriptions and trailing semicolons
    text = (
        "-- preamble comment, before any block\n"
        "\n"
        "-- name: first\n"
        "-- What the first query does.\n"
        "SELECT 1\n"
        "FROM t;\n"
        "\n"
        "-- name: second\n"
        "  -- an indented comment\n"
        "UPDATE t SET a = 1 WHERE b = $1;\n"
    )
    # When parsed
    queries = parse_queries(text)
    # Then each name maps to its SQL only: no comments, no blank lines, no trailing ';'
    assert queries == {"first": "SELECT 1\nFROM t", "second": "UPDATE t SET a = 1 WHERE b = $1"}


def test_parse_queries_keeps_semicolons_inside_the_statement() -> None:
    queries = parse_queries("-- name: q\nSELECT ';' AS semi;\n")
    assert queries == {"q": "SELECT ';' AS semi"}


def test_parse_queries_rejects_a_duplicate_name() -> None:
    text = "-- name: twice\nSELECT 1;\n-- name: other\nSELECT 2;\n-- name: twice\nSELECT 3;\n"
    with pytest.raises(ValueError, match="twice"):
        parse_queries(text)


@pytest.mark.parametrize("text", ["", "-- only a comment, no named block yet\n"])
def test_parse_queries_of_text_without_blocks_is_empty(text: str) -> None:
    assert parse_queries(text) == {}


def test_the_scan_finds_the_lookups() -> None:
    # Guard against a scan that silently finds nothing (then the next test would prove nothing).
    used = used_query_names()
    assert {"claim_job", "list_jobs", "ping", "export_hourly", "migrations_lock"} <= used


def test_every_query_the_code_uses_exists() -> None:
    missing = used_query_names() - set(QUERIES)
    assert not missing, f"queries used in code but absent from queries.sql: {sorted(missing)}"


def test_every_query_in_the_file_is_used() -> None:
    unused = set(QUERIES) - used_query_names()
    assert not unused, f"queries in queries.sql that no code uses: {sorted(unused)}"


def test_queries_are_non_empty_and_end_without_semicolon() -> None:
    for name, sql in QUERIES.items():
        assert sql, name
        assert not sql.endswith(";"), name
        assert "-- name:" not in sql, name


def test_queries_mapping_is_read_only() -> None:
    with pytest.raises(TypeError):
        QUERIES["ping"] = "SELECT 2"  # type: ignore[index]
