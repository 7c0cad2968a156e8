"""What an export needs of a rollup table, judged from the catalog's facts."""

from __future__ import annotations

import pytest

from service.retention import RollupTable
from service.rollups import COLUMNS, RollupTables, TableFacts, problems

FINE = {
    "bucket_start": "timestamp with time zone",
    "org_id": "uuid",
    "model_id": "text",
    "request_count": "bigint",
    "tokens_total": "bigint",
    "error_count": "integer",
    "cost_total": "numeric(20,6)",
    "currency": "character(3)",
    "inserted_at": "timestamp with time zone",  # the platform's own columns do not matter
}


def test_a_table_with_every_column_and_the_index_is_fine() -> None:
    assert problems(TableFacts("analytics.hourly_rollups", True, FINE, True)) == []
    varying = {**FINE, "model_id": "character varying(512)", "currency": "text"}
    assert problems(TableFacts("analytics.hourly_rollups", True, varying, True)) == []
    other = {**FINE, "bucket_start": "timestamp(0) with time zone", "currency": "character varying"}
    assert problems(TableFacts("analytics.hourly_rollups", True, other, True)) == []
    naive = {**FINE, "bucket_start": "timestamp(0) without time zone"}
    assert problems(TableFacts("x.r", True, naive, True)) == [
        "x.r.bucket_start is timestamp(0) without time zone, not timestamp with time zone"
    ]


def test_each_thing_missing_is_named() -> None:
    broken = {**FINE, "cost_total": "double precision", "currency": "character(4)"}
    del broken["tokens_total"]
    assert problems(TableFacts("x.rollups", True, broken, False)) == [
        "x.rollups has no column tokens_total (bigint)",
        "x.rollups.cost_total is double precision, not numeric(20,6) or a numeric it holds exactly"
        " (at most 6 decimals, 14 integer digits)",
        "x.rollups.currency is character(4), not character(3) or text or character varying",
        "x.rollups has no index on (org_id, bucket_start, ...) for the exports' range scans",
    ]
    assert problems(TableFacts("x.rollups", False, {}, False)) == [
        "the rollup table x.rollups does not exist"
    ]
    assert set(COLUMNS) < set(FINE)


def test_columns_the_user_may_not_read_are_named_and_others_not() -> None:
    facts = TableFacts("x.rollups", True, FINE, True, ("inserted_at", "cost_total", "currency"))
    assert problems(facts) == ["the database user may not SELECT cost_total, currency of x.rollups"]
    assert problems(TableFacts("x.rollups", True, FINE, True, ("inserted_at",))) == []


def test_the_tables_quote_their_names_for_the_templates_and_refuse_others() -> None:
    tables = RollupTables("platform.analytics_hourly_rollups", "platform.analytics_daily_rollups")
    assert tables.name(RollupTable.DAILY) == "platform.analytics_daily_rollups"
    assert tables.placeholders() == {
        "hourly_rollups": '"platform"."analytics_hourly_rollups"',
        "hourly_rollups_schema": '"platform"',
        "hourly_rollups_retention_index": '"analytics_hourly_rollups_retention_idx"',
        "daily_rollups": '"platform"."analytics_daily_rollups"',
        "daily_rollups_schema": '"platform"',
        "daily_rollups_retention_index": '"analytics_daily_rollups_retention_idx"',
    }
    with pytest.raises(ValueError, match="not a rollup table's name"):
        RollupTables('x."y"', "x.z")


@pytest.mark.parametrize(
    ("kind", "fine"),
    [
        ("numeric(20,6)", True),
        ("numeric(18,4)", True),  # every value fits six decimals: the file states them all
        ("numeric(12,6)", True),
        ("numeric(38,10)", False),  # a value could have digits the file would round away
        ("numeric(21,6)", False),  # 15 integer digits
        ("numeric", False),  # no scale at all
        ("double precision", False),
    ],
)
def test_a_cost_is_fine_only_in_a_numeric_that_numeric_20_6_holds_exactly(kind: str, fine: bool) -> None:
    assert (problems(TableFacts("x.rollups", True, {**FINE, "cost_total": kind}, True)) == []) is fine


def test_a_view_needs_no_index_of_its_own() -> None:
    # A view's rows come from tables whose indexes the catalog check cannot attribute to it
    assert problems(TableFacts("x.rollups", True, FINE, False, view=True)) == []
    assert problems(TableFacts("x.rollups", True, {**FINE, "cost_total": "numeric"}, False, view=True)) == [
        "x.rollups.cost_total is numeric, not numeric(20,6) or a numeric it holds exactly"
        " (at most 6 decimals, 14 integer digits)"
    ]


def test_pruning_needs_a_table_the_user_may_delete_from() -> None:
    locked = TableFacts("x.rollups", True, FINE, True, deletable=False)
    assert problems(locked) == []  # reading is all an export needs
    assert problems(locked, pruned=True) == [
        "ROLLUP_PRUNE=true, but the database user may not delete rows of x.rollups"
    ]
    view = TableFacts("x.rollups", True, FINE, False, view=True, prunable=False)
    assert problems(view, pruned=True) == ["x.rollups is not a table: ROLLUP_PRUNE=true prunes tables only"]
