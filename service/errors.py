"""The service's error tree.

``ExportsError`` is the root. Errors say what went wrong in the service's terms; none knows
HTTP: ``service/api/problems.py`` is the one place that decides how each is answered.
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


class RequestRefused(ExportsError):
    """A request the service will not carry out, and why: ``detail`` for a person, ``errors``
    naming the offending fields. How each kind is answered over HTTP is decided in one place,
    ``service/api/problems.py``."""

    def __init__(self, detail: str, *, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = dict(errors or {})


class ValidationFailed(RequestRefused):
    """The input is malformed or breaks a rule (a field, a range, a cursor)."""


class Unauthenticated(RequestRefused):
    """No caller could be established: the bearer token is missing or invalid."""


class Forbidden(RequestRefused):
    """The caller may not do this: a scope or an org the token does not grant."""


class NotFound(RequestRefused):
    """No such export for this org (another org's export is not found either)."""


class Conflict(RequestRefused):
    """The export's current state does not allow it (download before success, cancel after end)."""


class Gone(RequestRefused):
    """The export expired and its file was deleted."""


class IdempotencyKeyReused(RequestRefused):
    """The Idempotency-Key was used in the last 24 hours for a different request."""


class TooManyActiveExports(RequestRefused):
    """The org has as many exports pending or running as it may; try again later."""

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        #: Seconds after which trying again makes sense.
        self.retry_after = retry_after


class RequestTimeout(RequestRefused):
    """The client did not send its request in time; the connection is closed after the answer."""


class ClientClosedRequest(RequestRefused):
    """The client went away before its request was read; nothing can be answered."""


class UnsupportedMediaType(RequestRefused):
    """The body is not in a format the service reads (JSON)."""


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


class MigrationMismatch(ExportsError):
    """The database records a migration under a name this code's file of that number does not
    have: it ran a migration this code does not know."""


class BackendUnavailable(ExportsError):
    """A service this one depends on is unreachable; such outages usually pass in seconds."""


class RollupTablesUnfit(BackendUnavailable):
    """The rollup tables lack what an export reads (a column, a type, the index): every export
    would fail until the platform's schema provides it."""


class IdentityProviderUnavailable(BackendUnavailable):
    """The identity provider's signing keys (AUTH_JWKS_URL) could not be fetched."""


class DatabaseUnavailable(BackendUnavailable, Retryable):
    """PostgreSQL could not be reached or dropped the connection."""
