"""Webhook signatures as the Standard Webhooks convention has them (symmetric, ``v1``).

Each delivery carries ``webhook-id`` (the same on every retry), ``webhook-timestamp`` (Unix
seconds of the attempt) and ``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256>``
over ``{id}.{timestamp}.{body}``, one per live secret (two while a rotated secret's grace lasts).
A secret is ``whsec_`` and the base64 of 32 random bytes; the key is those bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from typing import Final

PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32
#: How far a delivery's timestamp may be from the receiver's clock (replays are refused).
TOLERANCE_SECONDS: Final = 5 * 60


class SignatureInvalid(Exception):
    """The delivery's headers do not prove it came from us, now, with this body."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        return base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ and base64") from None


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<signature>`` entry of the ``webhook-signature`` header."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(live_secrets: Iterable[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one delivery attempt, signed with every live secret."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, message_id, timestamp, body) for s in live_secrets),
    }


def verify(secret: str, received: Mapping[str, str], body: bytes, now: float) -> None:
    """What a receiver checks: the timestamp within TOLERANCE_SECONDS of ``now``, and one of the
    signatures made with ``secret``. SignatureInvalid if not."""
    try:
        message_id, timestamp = received["webhook-id"], int(received["webhook-timestamp"])
        offered = received["webhook-signature"].split()
    except (KeyError, ValueError):
        raise SignatureInvalid("missing or malformed webhook headers") from None
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise SignatureInvalid("the timestamp is too far from now (a replay?)")
    expected = sign(secret, message_id, timestamp, body)
    if not any(hmac.compare_digest(expected, entry) for entry in offered):
        raise SignatureInvalid("no signature matches")
