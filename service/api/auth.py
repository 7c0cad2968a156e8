"""Bearer tokens: HS256 JWTs with ``sub``, ``orgs``, ``scope`` and ``exp``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import jwt

from service.errors import Forbidden, Unauthenticated

READ: Final = "exports:read"
WRITE: Final = "exports:write"
ALGORITHM: Final = "HS256"
#: Clock skew tolerated on exp/nbf/iat between the token issuer and us.
LEEWAY_SECONDS: Final = 30
#: ``sub`` becomes the job's requested_by: a name or an email, never a document.
MAX_SUBJECT_LENGTH: Final = 256


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    orgs: frozenset[uuid.UUID]
    scopes: frozenset[str]

    def require(self, org_id: uuid.UUID, scope: str) -> None:
        """403 unless the caller may act for ``org_id`` with ``scope``."""
        if scope not in self.scopes:
            raise Forbidden(f"token lacks the {scope} scope")
        if org_id not in self.orgs:
            raise Forbidden(f"token does not grant access to org {org_id}")


def principal_from_header(
    header: str | None, secret: str, *, issuer: str | None = None, audience: str | None = None
) -> Principal:
    if not header:
        raise Unauthenticated("Authorization header with a Bearer token is required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <token>'")
    try:
        claims = jwt.decode(
            token.strip(),
            secret,
            algorithms=[ALGORITHM],
            leeway=LEEWAY_SECONDS,
            issuer=issuer,
            audience=audience,
            options={"require": ["exp", "sub", *(["iss"] if issuer else []), *(["aud"] if audience else [])]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    sub, orgs, scope = claims.get("sub"), claims.get("orgs", []), claims.get("scope", "")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_SUBJECT_LENGTH or "\x00" in sub:
        raise Unauthenticated(f"invalid token: sub must be a string of 1 to {MAX_SUBJECT_LENGTH} characters")
    if not isinstance(orgs, list) or not isinstance(scope, str):
        raise Unauthenticated("invalid token: orgs must be a list and scope a string")
    try:
        org_ids = frozenset(uuid.UUID(str(org)) for org in orgs)
    except ValueError:
        raise Unauthenticated("invalid token: orgs must hold UUIDs") from None
    return Principal(subject=sub, orgs=org_ids, scopes=frozenset(scope.split()))


def mint_token(
    secret: str,
    *,
    subject: str,
    orgs: Iterable[uuid.UUID],
    scopes: Iterable[str],
    ttl_seconds: int = 3600,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": subject,
        "orgs": [str(org) for org in orgs],
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + ttl_seconds,
        **({"iss": issuer} if issuer else {}),
        **({"aud": audience} if audience else {}),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
