"""Named queries: the parser, the templates of the rollup tables, and that every name the code
looks up exists in queries.sql or rollups.sql and every query there is used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.job import Granularity
from service.repository import _PRUNE_QUERY
from service.rollups import RollupTables
from service.sql import PLACEHOLDER, QUERIES, ROLLUP_TEMPLATES, parse_queries, render, rollup_queries

ROOT = Path(__file__).resolve().parents[3]
SOURCES = sorted(
    path for package in ("service", "actors", "cli", "devtools") for path in (ROOT / package).rglob("*.py")
)

_LOOKUP = re.compile(r"(?P<mapping>QUERIES|\bsql|\._sql)\[\s*(?P<expr>[^\]]+?\]?)\s*\]")
_LITERAL = re.compile(r"""^(["'])(?P<name>\w+)\1$""")
_EXPORT_BY_GRANULARITY = re.compile(r"""^f(["'])export_\{job\.granularity\.value\}\1$""")
#: ``JobRepository._one(name, ...)`` and ``_owned(name, ...)`` look up ``QUERIES[name]``: their
#: callers pass literal names.
_ONE_CALL = re.compile(r"""\._(?:one|owned)\(\s*(["'])(?P<name>\w+)\1""")


def used_names() -> tuple[set[str], set[str]]:
    """Every name the service and actors code looks up, found by scanning the source: in QUERIES,
    and in the rollup queries (``sql[...]``, ``self._sql[...]``)."""
    queries: set[str] = set()
    rollups: set[str] = set()
    for path in SOURCES:
        text = path.read_text("utf-8")
        for lookup in _LOOKUP.finditer(text):
            names = queries if lookup.group("mapping") == "QUERIES" else rollups
            expr = lookup.group("expr")
            if literal := _LITERAL.match(expr):
                names.add(literal.group("name"))
            elif _EXPORT_BY_GRANULARITY.match(expr):
                names.update(f"export_{g.value}" for g in Granularity)
            elif expr == "_PRUNE_QUERY[table]":
                names.update(_PRUNE_QUERY.values())
            elif expr == "name" and path.name == "repository.py":
                pass  # _one(name, ...): its callers are collected below
            else:
                pytest.fail(f"{path.relative_to(ROOT)}: unrecognised query lookup {lookup.group(0)}")
        queries.update(call.group("name") for call in _ONE_CALL.finditer(text))
    # A fragment is used where a used template names it.
    rollups.update(
        match.group(1)
        for name in list(rollups)
        for match in PLACEHOLDER.finditer(ROLLUP_TEMPLATES.get(name, ""))
        if match.group(1) in ROLLUP_TEMPLATES
    )
    return queries, rollups


def used_query_names() -> set[str]:
    return used_names()[0]


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
    queries, rollups = used_names()
    assert {"claim_job", "list_jobs", "ping", "migrations_lock"} <= queries
    assert {
        "export_hourly",
        "export_focus",
        "prune_daily_rollups",
        "seed_demo_daily",
        "covered_days",
    } <= rollups


def test_every_query_the_code_uses_exists() -> None:
    queries, rollups = used_names()
    missing = (queries - set(QUERIES)) | (rollups - set(ROLLUP_TEMPLATES))
    assert not missing, f"queries used in code but absent from queries.sql and rollups.sql: {sorted(missing)}"


def test_every_query_in_the_files_is_used() -> None:
    queries, rollups = used_names()
    unused = (set(QUERIES) - queries) | (set(ROLLUP_TEMPLATES) - rollups)
    assert not unused, f"queries in queries.sql or rollups.sql that no code uses: {sorted(unused)}"


def test_only_the_rollup_queries_are_templates_and_only_they_name_a_rollup_table() -> None:
    for name, sql in QUERIES.items():
        assert not PLACEHOLDER.search(sql), name
        assert "_rollups" not in sql, name
    for name, sql in ROLLUP_TEMPLATES.items():
        assert PLACEHOLDER.search(sql), name
        assert "_rollups" not in PLACEHOLDER.sub("", sql), f"{name} names a rollup table itself"


def test_the_rollup_queries_read_the_tables_the_settings_name() -> None:
    queries = rollup_queries(
        RollupTables("platform.analytics_hourly_rollups", "platform.analytics_daily_rollups").placeholders()
    )
    assert set(queries) == set(ROLLUP_TEMPLATES)
    assert '"platform"."analytics_daily_rollups"' in queries["export_daily"]
    assert '"platform"."analytics_hourly_rollups"' in queries["export_daily"]  # through covered_days
    for name, sql in queries.items():
        assert not PLACEHOLDER.search(sql), name
        assert '"analytics"' not in sql, name


def test_render_fills_values_and_fragments_in_parentheses() -> None:
    templates = {
        "outer": "SELECT * FROM {inner} AS i JOIN {t} USING (a) WHERE b = '{}'",
        "inner": "SELECT a FROM {t}",
    }
    assert render(templates, {"t": '"s"."t"'}) == {
        "outer": """SELECT * FROM (SELECT a FROM "s"."t") AS i JOIN "s"."t" USING (a) WHERE b = '{}'""",
        "inner": 'SELECT a FROM "s"."t"',
    }


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        ({"q": "SELECT {nowhere}"}, "neither a value nor a template"),
        ({"q": "SELECT {r}", "r": "SELECT {q}"}, "contains itself"),
    ],
)
def test_render_refuses_an_unknown_name_and_a_cycle(templates: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(templates, {})


def test_queries_are_non_empty_and_end_without_semicolon() -> None:
    for name, sql in QUERIES.items():
        assert sql, name
        assert not sql.endswith(";"), name
        assert "-- name:" not in sql, name


def test_queries_mapping_is_read_only() -> None:
    with pytest.raises(TypeError):
        QUERIES["ping"] = "SELECT 2"  # type: ignore[index]
