"""The benchmark's baseline A runs the export query through psql: every parameter must be filled."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from bench.run import literal_export_query


def test_the_literal_export_query_fills_every_parameter() -> None:
    sql = literal_export_query(
        uuid.uuid4(), datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    )
    assert re.search(r"\$\d", sql) is None, sql
    assert "\n" not in sql  # psql's \copy reads one line
