"""The service's error tree.

``ExportsError`` is the root. API-facing errors carry the HTTP status and a stable problem
``type`` slug; the error middleware is the only place that turns them into responses.
Export failures are split into :class:`ExportFailed` subclasses so a worker can tell a
retryable fault from a terminal one.
"""

from __future__ import annotations

from collections.abc import Mapping


class ExportsError(Exception):
    """Root of every error this service raises on purpose."""


class SettingsError(ExportsError):
    """A configuration value is missing or malformed; names the variable."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class ApiError(ExportsError):
    """An error answered to an API client as ``application/problem+json``."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"
    #: Seconds a client should wait before trying again (the Retry-After header), if it should.
    retry_after: int | None = None

    def __init__(self, detail: str, *, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = dict(errors or {})


class ValidationFailed(ApiError):
    status = 400
    slug = "validation-error"
    title = "Request validation failed"


class Unauthenticated(ApiError):
    status = 401
    slug = "unauthenticated"
    title = "Missing or invalid bearer token"


class Forbidden(ApiError):
    status = 403
    slug = "forbidden"
    title = "Not allowed"


class NotFound(ApiError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(ApiError):
    status = 409
    slug = "conflict"
    title = "Conflict with the job's current state"


class Gone(ApiError):
    status = 410
    slug = "gone"
    title = "Export expired"


class IdempotencyKeyReused(ApiError):
    status = 422
    slug = "idempotency-key-reused"
    title = "Idempotency-Key already used for a different request"


class TooManyActiveExports(ApiError):
    status = 429
    slug = "too-many-active-exports"
    title = "Too many exports in progress for this org"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class RequestTimeout(ApiError):
    """The client did not send its request in time; the connection is closed after the answer."""

    status = 408
    slug = "request-timeout"
    title = "Request not received in time"


class ClientClosedRequest(ApiError):
    """The client went away before its request was read; nothing is answered (499 in metrics)."""

    status = 499
    slug = "client-closed-request"
    title = "Client closed the request"


class UnsupportedMediaType(ApiError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class ExportFailed(ExportsError):
    """An export could not be produced; the message is stored as the job's error_message."""


class Retryable(ExportsError):
    """Marks a fault that may pass (a dropped connection, a timeout, a 5xx): worth another try."""


class StorageError(ExportFailed):
    """The object store refused or failed an operation."""


class TerminalStorageError(StorageError):
    """A storage failure that retrying cannot fix (missing bucket, access denied, bad config)."""


class RetryableStorageError(StorageError, Retryable):
    """A storage failure that may pass (timeouts, resets, 5xx, SlowDown)."""


class ExportCancelled(ExportsError):
    """The running attempt stops because a user cancelled the export."""


class LeaseLost(ExportsError):
    """The running attempt no longer owns its job (its lease lapsed and the job moved on)."""


class QueueUnavailable(ExportsError):
    """The task queue could not accept a message."""


class ServiceUnavailable(ApiError):
    status = 503
    slug = "service-unavailable"
    title = "A backing service is unavailable"
    #: Outages usually pass in seconds (a failover, a restart); clients poll again after this.
    retry_after = 5


class DatabaseUnavailable(ServiceUnavailable, Retryable):
    """PostgreSQL could not be reached or dropped the connection."""
