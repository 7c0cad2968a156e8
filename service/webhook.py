"""Webhooks: the endpoints an org registers, the deliveries of each event to them, the attempts of
each delivery, when a failed attempt is tried again, and which addresses a delivery may reach.

An event (a job succeeded, failed, was restated) becomes one delivery per enabled endpoint of the
job's org that subscribed to it, in the same transaction as the job's change (a trigger:
migrations/0018_webhooks.up.sql), so no event is lost and none is made twice. Each delivery is
tried until the receiver answers 2xx, with the same ``webhook-id`` every time, on the schedule
of WEBHOOK_RETRY_SCHEDULE; after its last retry it is failed.
"""

from __future__ import annotations

import enum
import ipaddress
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from urllib.parse import urlsplit

#: Endpoints an org may have.
MAX_WEBHOOKS_PER_ORG: Final = 20
MAX_URL_LENGTH: Final = 2048
#: How long the secret a rotation replaced still signs deliveries (both signatures are sent).
ROTATION_GRACE: Final = timedelta(hours=24)
#: Retries after the first attempt, in seconds: the Standard Webhooks schedule (5 s, 5 min, 30 min,
#: 2 h, 5 h, 10 h, 10 h): the last one 27 hours after the event.
DEFAULT_RETRY_SCHEDULE: Final = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class WebhookEvent(enum.StrEnum):
    SUCCEEDED = "export.succeeded"
    FAILED = "export.failed"
    RESTATED = "export.restated"
    CANCELLED = "export.cancelled"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Unreachable(Exception):
    """An attempt got no answer: a timeout, a refused connection, a name that does not resolve
    (or resolves only to addresses webhooks may not reach), a TLS failure."""


class AddressRefused(ValueError):
    """A webhook URL this service may not call (its message says why, for the caller)."""


def message_id(delivery_id: uuid.UUID) -> str:
    """The ``webhook-id`` of a delivery: the same on every attempt."""
    return f"msg_{delivery_id.hex}"


def refused_ip(address: str) -> str | None:
    """Why a delivery may not connect to ``address`` (an IP literal), or None when it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id says nothing here
    if isinstance(ip, ipaddress.IPv6Address):  # an IPv4 address inside an IPv6 one counts as itself
        ip = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None) or ip
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_private or ip.is_link_local or ip.is_reserved or ip.is_multicast or not ip.is_global:
        return "a private or reserved address"
    return None


def ip_literal(host: str) -> str | None:
    """``host`` when it is an IP address (brackets of IPv6 dropped), else None."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        return None
    return bare


def check_url(url: str, *, allow_private: bool) -> str:
    """The host of ``url`` when this service may deliver to it; AddressRefused with the reason
    otherwise. Only ``https`` to a host that is not an internal name or a private, loopback or
    reserved IP, unless ``allow_private`` (WEBHOOK_ALLOW_PRIVATE_URLS: development and tests),
    which also allows ``http``. A host name's addresses are checked when a delivery connects (a
    name can change what it resolves to)."""
    if len(url) > MAX_URL_LENGTH:
        raise AddressRefused(f"is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as exc:
        raise AddressRefused(f"is not a URL ({exc})") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise AddressRefused(
            "must be an https:// or http:// URL" if allow_private else "must be an https:// URL"
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise AddressRefused("has no host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("must not hold credentials (verify the signature instead)")
    if parts.fragment:
        raise AddressRefused("must not have a #fragment")
    if allow_private:
        return host
    literal = ip_literal(host)
    if literal is not None:
        reason = refused_ip(literal)
        if reason is not None:
            raise AddressRefused(f"points to {reason}; webhooks go to public addresses")
    elif host == "localhost" or host.endswith((".localhost", ".local", ".internal")) or "." not in host:
        raise AddressRefused("names an internal host; webhooks go to public addresses")
    return host


def retry_delay(attempts: int, schedule: Sequence[float]) -> timedelta | None:
    """How long after its ``attempts``-th failed attempt a delivery is tried again; None when
    that was its last."""
    if attempts > len(schedule):
        return None
    return timedelta(seconds=schedule[attempts - 1])


@dataclass(frozen=True, slots=True)
class Webhook:
    """An org's endpoint: where its events go, and whether it still gets them."""

    webhook_id: uuid.UUID
    org_id: uuid.UUID
    created_by: str
    url: str
    events: tuple[WebhookEvent, ...]
    enabled: bool
    #: Why it was disabled (by its owner, or after failing every delivery for a day).
    disabled_reason: str | None
    disabled_at: datetime | None
    #: The first failed attempt since its last delivered one (None: not failing).
    failing_since: datetime | None
    #: Until when the secret a rotation replaced still signs (None: no rotation under way).
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> Webhook:
        return cls(
            webhook_id=row["webhook_id"],  # type: ignore[arg-type]
            org_id=row["org_id"],  # type: ignore[arg-type]
            created_by=str(row["created_by"]),
            url=str(row["url"]),
            events=tuple(WebhookEvent(e) for e in row["events"]),  # type: ignore[attr-defined]
            enabled=bool(row["enabled"]),
            disabled_reason=row["disabled_reason"],  # type: ignore[arg-type]
            disabled_at=row["disabled_at"],  # type: ignore[arg-type]
            failing_since=row["failing_since"],  # type: ignore[arg-type]
            previous_secret_expires_at=row["previous_secret_expires_at"],  # type: ignore[arg-type]
            created_at=row["created_at"],  # type: ignore[arg-type]
            updated_at=row["updated_at"],  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class WebhookChange:
    """What an update sets (None: unchanged)."""

    url: str | None = None
    events: tuple[WebhookEvent, ...] | None = None
    enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    attempted_at: datetime
    #: The receiver's HTTP status (None: no answer: a timeout, a refused connection).
    status_code: int | None
    #: What went wrong, in words (None: delivered).
    error: str | None
    duration_ms: int

    @classmethod
    def from_json(cls, item: Mapping[str, object]) -> Attempt:
        return cls(
            attempt=int(item["attempt"]),  # type: ignore[call-overload]
            attempted_at=datetime.fromisoformat(str(item["attempted_at"])),
            status_code=item["status_code"],  # type: ignore[arg-type]
            error=item["error"],  # type: ignore[arg-type]
            duration_ms=int(item["duration_ms"]),  # type: ignore[call-overload]
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one endpoint."""

    delivery_id: uuid.UUID
    seq: int
    webhook_id: uuid.UUID
    org_id: uuid.UUID
    event: WebhookEvent
    job_id: uuid.UUID
    status: DeliveryStatus
    attempts: tuple[Attempt, ...]
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None

    @property
    def message_id(self) -> str:
        return message_id(self.delivery_id)


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    items: tuple[Delivery, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Pending:
    """A delivery claimed for its next attempt, before its body exists (first attempt) or with it."""

    delivery_id: uuid.UUID
    webhook_id: uuid.UUID
    org_id: uuid.UUID
    event: WebhookEvent
    job_id: uuid.UUID
    #: Attempts made before this one.
    attempts: int
    payload: bytes | None
    details: Mapping[str, object]
    created_at: datetime
