"""Structured logs: one JSON object per line, extras included, exceptions formatted."""

from __future__ import annotations

import logging
import uuid

import orjson

from service.logs import JsonFormatter


def record(
    msg: str, *args: object, extra: dict[str, object] | None = None, exc: bool = False
) -> logging.LogRecord:
    logger = logging.getLogger("service.test")
    exc_info = None
    if exc:
        try:
            raise ValueError("bad value")
        except ValueError as caught:
            exc_info = (type(caught), caught, caught.__traceback__)
    return logger.makeRecord("service.test", logging.WARNING, __file__, 1, msg, args, exc_info, extra=extra)


def test_a_line_is_one_json_object_with_the_standard_fields() -> None:
    line = JsonFormatter().format(record("exported %d rows", 42))
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["msg"] == "exported 42 rows"
    assert entry["level"] == "warning"
    assert entry["logger"] == "service.test"
    assert entry["ts"].endswith("+00:00")
    assert "exc" not in entry


def test_extras_are_fields_and_standard_attributes_are_not() -> None:
    job_id = uuid.uuid4()
    entry = orjson.loads(JsonFormatter().format(record("x", extra={"job_id": job_id, "attempt": 2})))
    assert entry["job_id"] == str(job_id)
    assert entry["attempt"] == 2
    for noise in ("args", "levelno", "pathname", "lineno", "msecs", "thread"):
        assert noise not in entry


def test_exceptions_are_formatted() -> None:
    entry = orjson.loads(JsonFormatter().format(record("failed", exc=True)))
    assert "ValueError: bad value" in entry["exc"]
    assert "Traceback" in entry["exc"]
