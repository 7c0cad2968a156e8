"""What the export needs of the rollup tables it reads: the platform's rollup worker writes them
(``make run``, the tests and compose's demo create their own); the API and the worker check them
at start and ``/readyz`` reports them, so a table that lacks a column stops a process with one line
naming it rather than failing every export."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from service.retention import RollupTable

SCHEMA: Final = "analytics"
#: Column -> the types (as PostgreSQL's format_type writes them) an export can read it as.
COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "bucket_start": ("timestamp with time zone",),
    "org_id": ("uuid",),
    "model_id": ("text", "character varying"),
    "request_count": ("bigint", "integer"),
    "tokens_total": ("bigint", "integer"),
    "error_count": ("bigint", "integer"),
    "cost_total": ("numeric",),
    "currency": ("character(3)", "text", "character varying(3)"),
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


def qualified(table: RollupTable) -> str:
    return f"{SCHEMA}.{table.value}"


def _type_ok(found: str, accepted: tuple[str, ...]) -> bool:
    # numeric(20,6) is numeric; character varying(3) is one of its own
    return any(found == kind or (found.startswith(kind + "(") and kind != "character") for kind in accepted)


def problems(facts: TableFacts) -> list[str]:
    """What an export would miss in the table, in words naming each thing (none: it is fine)."""
    if not facts.exists:
        return [f"the rollup table {facts.name} does not exist"]
    found: list[str] = []
    for column, accepted in COLUMNS.items():
        kind = facts.columns.get(column)
        if kind is None:
            found.append(f"{facts.name} has no column {column} ({accepted[0]})")
        elif not _type_ok(kind, accepted):
            found.append(f"{facts.name}.{column} is {kind}, not {' or '.join(accepted)}")
    if not facts.ordered:
        found.append(
            f"{facts.name} has no index on ({', '.join(ORDER_KEY)}, ...) for the exports' range scans"
        )
    return found
