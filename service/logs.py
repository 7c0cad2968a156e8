"""Structured logs: one JSON object per line, with job_id, org_id, attempt and request_id where
there are such.

:func:`log_context` binds fields to everything logged inside it, in the same task or thread
(a ``contextvars`` context: an API request, an export attempt), so deep code need not pass
them along. Fields given to a single call with ``extra=`` win over the bound ones.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

import orjson

_STANDARD: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_EMPTY: Final[Mapping[str, object]] = MappingProxyType({})
_bound: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar("log_context", default=_EMPTY)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` (None values skipped) to every line logged inside the block."""
    token = _bound.set({**_bound.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _bound.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_bound.get())
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, process: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("botocore").setLevel("WARNING")
    logging.getLogger("aiobotocore").setLevel("WARNING")
    logging.getLogger("pika").setLevel("WARNING")
    logging.getLogger("aiohttp.access").setLevel(level)
    old_factory = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = old_factory(*args, **kwargs)
        record.process_role = process
        return record

    logging.setLogRecordFactory(factory)
