"""Structured logs: one JSON object per line, extras included, exceptions formatted."""

from __future__ import annotations

import asyncio
import logging
import uuid

import orjson

from service.logs import JsonFormatter, log_context


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


def line(level: int, msg: str, **extra: object) -> dict[str, object]:
    """One formatted line, as the JSON formatter writes it, parsed back."""
    entry = record(msg, extra=extra or None)
    entry.levelno = level
    parsed: dict[str, object] = orjson.loads(JsonFormatter().format(entry))
    return parsed


def test_bound_fields_are_on_every_line_inside_the_block_and_gone_after() -> None:
    # Given fields bound for a block (None values are left out)
    with log_context(job_id="j-1", request_id="r-1", attempt=None):
        inside = line(logging.INFO, "inside")
        # And an explicit extra for one call wins over a bound field
        overridden = line(logging.INFO, "override", job_id="j-2")
    after = line(logging.INFO, "after")
    assert inside["job_id"] == "j-1"
    assert inside["request_id"] == "r-1"
    assert "attempt" not in inside
    assert overridden["job_id"] == "j-2"
    assert "job_id" not in after
    assert "request_id" not in after


async def test_bound_fields_stay_with_their_own_task() -> None:
    # Given two concurrent tasks, each binding its own job
    async def attempt(job: str) -> dict[str, object]:
        with log_context(job_id=job):
            await asyncio.sleep(0)
            return line(logging.INFO, "working")

    # Then each line carries its own task's job id
    first, second = await asyncio.gather(attempt("a"), attempt("b"))
    assert (first["job_id"], second["job_id"]) == ("a", "b")
