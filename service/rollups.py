"""The rollup tables exports read: where they are (ROLLUP_HOURLY_TABLE, ROLLUP_DAILY_TABLE), and
what an export needs of them. The platform's rollup worker writes them (``make run``, the tests and
compose make their own with ``migrate up --with-rollups``); the API and the worker check them at
start and ``/readyz`` reports them, so a table that lacks a column stops a process with one line
naming it rather than failing every export."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from service.retention import RollupTable

#: A rollup table's name as ROLLUP_HOURLY_TABLE and ROLLUP_DAILY_TABLE give it: ``schema.table``,
#: each part an identifier PostgreSQL keeps as written (lower case, no quoting needed; no ``$``,
#: which asyncpg's COPY with arguments would take for a parameter); the table's at most 49
#: characters, so its retention index's name (``_retention_idx`` added) is not cut to 63.
TABLE_NAME: Final = re.compile(r"([a-z_][a-z0-9_]{0,62})\.([a-z_][a-z0-9_]{0,48})", re.ASCII)
TABLE_NAME_RULE: Final = (
    "schema.table: lower-case letters, digits and _, the table's name at most 49 characters"
)
#: Column -> the types (as PostgreSQL's format_type writes them) an export can read it as.
COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "bucket_start": ("timestamp with time zone",),
    "org_id": ("uuid",),
    "model_id": ("text", "character varying"),
    "request_count": ("bigint", "integer"),
    "tokens_total": ("bigint", "integer"),
    "error_count": ("bigint", "integer"),
    # at most six decimals and 14 integer digits: exports state it as numeric(20,6), never rounded
    "cost_total": ("numeric(20,6)",),
    "currency": ("character(3)", "text", "character varying"),
}
#: The leading key columns of the index an export's range scan and order need.
ORDER_KEY: Final = ("org_id", "bucket_start")


@dataclass(frozen=True, slots=True)
class TableFacts:
    """What the catalog says of one rollup table."""

    name: str
    exists: bool
    #: Column -> its type.
    columns: Mapping[str, str]
    #: Whether a valid index leads with ORDER_KEY.
    ordered: bool
    #: The columns the database user may not SELECT.
    unreadable: tuple[str, ...] = ()
    #: A view (a TimescaleDB continuous aggregate is one): it has no index of its own to check.
    view: bool = False
    #: Whether it is a table (plain or partitioned), which ROLLUP_PRUNE can delete rows of.
    prunable: bool = True
    #: Whether the database user may DELETE from it (ROLLUP_PRUNE).
    deletable: bool = True


@dataclass(frozen=True, slots=True)
class RollupTables:
    """Where the rollups are: the schema-qualified names of the hourly and the daily table."""

    hourly: str = "analytics.hourly_rollups"
    daily: str = "analytics.daily_rollups"
    #: Whether this service prunes them past the retention window (ROLLUP_PRUNE).
    pruned: bool = False

    def __post_init__(self) -> None:
        for name in (self.hourly, self.daily):
            if not TABLE_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a rollup table's name ({TABLE_NAME_RULE})")

    def name(self, table: RollupTable) -> str:
        return self.hourly if table is RollupTable.HOURLY else self.daily

    def placeholders(self) -> dict[str, str]:
        """What the SQL templates' ``{hourly_rollups}``-style placeholders stand for: each table
        quoted and qualified, its schema, and its retention index's name (the ``migrate up
        --with-rollups`` tables)."""
        values: dict[str, str] = {}
        for table in RollupTable:
            match = TABLE_NAME.fullmatch(self.name(table))
            assert match is not None
            schema, bare = match.groups()
            values[table.value] = f'"{schema}"."{bare}"'
            values[f"{table.value}_schema"] = f'"{schema}"'
            values[f"{table.value}_retention_index"] = f'"{bare}_retention_idx"'
        return values


#: The names this project gives the rollup tables (``migrate up --with-rollups``).
DEFAULT_TABLES: Final = RollupTables()


_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_PRECISION = re.compile(r"^timestamp\(\d\)")


def _type_ok(found: str, accepted: tuple[str, ...]) -> bool:
    found = _PRECISION.sub("timestamp", found)  # timestamptz(0) is a timestamptz
    if accepted[0] == "numeric(20,6)":
        # Any numeric that numeric(20,6) holds exactly: numeric(18,4) yes, numeric(38,10) or a
        # numeric without a scale no (a value could carry digits the file would have to round).
        match = _NUMERIC.fullmatch(found)
        return match is not None and int(match[2]) <= 6 and int(match[1]) - int(match[2]) <= 14
    # character varying(512) is character varying; character(4) is not character(3)
    return any(found == kind or (found.startswith(kind + "(") and kind != "character") for kind in accepted)


def problems(facts: TableFacts, *, pruned: bool = False) -> list[str]:
    """What an export (and, if ``pruned``, the pruning) would miss in the table, in words naming
    each thing (none: it is fine)."""
    if not facts.exists:
        return [f"the rollup table {facts.name} does not exist"]
    found: list[str] = []
    for column, accepted in COLUMNS.items():
        kind = facts.columns.get(column)
        if kind is None:
            found.append(f"{facts.name} has no column {column} ({accepted[0]})")
        elif not _type_ok(kind, accepted):
            what = " or ".join(accepted)
            if column == "cost_total":
                what = "numeric(20,6) or a numeric it holds exactly (at most 6 decimals, 14 integer digits)"
            found.append(f"{facts.name}.{column} is {kind}, not {what}")
    if not facts.ordered and not facts.view:
        found.append(
            f"{facts.name} has no index on ({', '.join(ORDER_KEY)}, ...) for the exports' range scans"
        )
    if denied := [column for column in COLUMNS if column in facts.unreadable]:
        found.append(f"the database user may not SELECT {', '.join(denied)} of {facts.name}")
    if pruned and not facts.prunable:
        found.append(f"{facts.name} is not a table: ROLLUP_PRUNE=true prunes tables only")
    elif pruned and not facts.deletable:
        found.append(f"ROLLUP_PRUNE=true, but the database user may not delete rows of {facts.name}")
    return found
