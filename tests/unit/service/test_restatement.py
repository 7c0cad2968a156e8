"""Restatements' pure parts: the totals a manifest states, their differences, and the whole days
a daily export reads from the daily rollups."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from service.repository import whole_days
from service.restatement import differences, manifest_totals


def test_differences_are_exact_per_currency_and_count_a_missing_currency_as_zero() -> None:
    old = {"USD": {"costTotal": "10.100000", "requestCount": 5, "tokensTotal": 100, "errorCount": 1}}
    new = {
        "USD": {"costTotal": "10.000001", "requestCount": 5, "tokensTotal": 90, "errorCount": 2},
        "EUR": {"costTotal": "0.500000", "requestCount": 1, "tokensTotal": 7, "errorCount": 0},
    }
    assert differences(new, old) == {
        "EUR": {"costTotal": "0.500000", "requestCount": 1, "tokensTotal": 7, "errorCount": 0},
        "USD": {"costTotal": "-0.099999", "requestCount": 0, "tokensTotal": -10, "errorCount": 1},
    }
    assert differences({}, old)["USD"] == {
        "costTotal": "-10.100000",
        "requestCount": -5,
        "tokensTotal": -100,
        "errorCount": -1,
    }


def test_manifest_totals_compare_by_value_not_by_spelling() -> None:
    manifest = b'{"totals": {"USD": {"costTotal": "1.500000", "requestCount": 2, "tokensTotal": 3, "errorCount": 0}}}'  # noqa: E501
    assert manifest_totals(manifest) == {"USD": (Decimal("1.5"), 2, 3, 0)}


def test_whole_days_are_the_midnights_inside_the_range_or_none() -> None:
    def at(day: int, hour: int = 0) -> datetime:
        return datetime(2026, 10, day, hour, tzinfo=UTC)

    assert whole_days(at(4, 12), at(7)) == (at(5), at(7))
    assert whole_days(at(4), at(7, 6)) == (at(4), at(7))
    assert whole_days(at(4, 12), at(5, 6)) == (at(4, 12), at(4, 12))  # no whole day: hours only
    assert whole_days(at(4, 1), at(4, 23)) == (at(4, 1), at(4, 1))
