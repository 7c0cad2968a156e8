"""Bearer tokens: HS256 JWTs with ``sub``, ``orgs``, ``scope`` and ``exp``."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import jwt

from service.errors import Forbidden, IdentityProviderUnavailable, Unauthenticated

log = logging.getLogger(__name__)
READ: Final = "exports:read"
WRITE: Final = "exports:write"
#: Not a scope: a route that takes any valid token (the caller asks about itself, not an org).
SIGNED_IN: Final = "*"
ALGORITHM: Final = "HS256"
#: Clock skew tolerated on exp/nbf/iat between the token issuer and us.
LEEWAY_SECONDS: Final = 30
#: ``sub`` becomes the job's requested_by: a name or an email, never a document.
MAX_SUBJECT_LENGTH: Final = 256
#: A verified token is remembered this long (never past its ``exp``), so a client's repeated
#: calls skip signature checking: at 64 connections that was a quarter of the API's CPU per GET.
VERIFIED_TOKEN_SECONDS: Final = 60.0
#: Verified tokens remembered at once (least recently used first out).
VERIFIED_TOKEN_CAPACITY: Final = 4096
#: NumericDate claims (exp, iat, nbf) must be numbers below this (the year 10000): no real token
#: lives that long, and larger values overflow date arithmetic.
MAX_NUMERIC_DATE: Final = 253_402_300_800


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


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthenticated("Authorization header with a Bearer token is required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <token>'")
    return token.strip()


def _reason(exc: jwt.InvalidTokenError) -> str:
    """What is wrong with a token, in this service's words (never the library's message)."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"invalid token: the {exc.claim} claim is required"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "invalid token: iss is not the issuer this service trusts"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "invalid token: aud does not name this service"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "invalid token: the signature does not verify"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "invalid token: its algorithm is not accepted"
    if isinstance(exc, jwt.DecodeError):
        return "invalid token: not a well-formed signed JWT"
    return "invalid token"


def _numeric_date(claims: dict[str, object], name: str) -> float | None:
    """A NumericDate claim as seconds since the epoch; 401 unless it is a number in range."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < MAX_NUMERIC_DATE:
        raise Unauthenticated(f"invalid token: {name} must be a number of seconds since 1970, before 10000")
    return float(value)


def verify_token(
    token: str, key: object, algorithm: str, *, issuer: str | None = None, audience: str | None = None
) -> tuple[Principal, float]:
    """Verify ``token`` with ``key`` under exactly ``algorithm``: the caller, and the token's
    ``exp`` in seconds since the epoch."""
    try:
        # PyJWT checks the signature, the algorithm, iss, aud and that the claims are there; the
        # dates are checked below, after their types (PyJWT would take "exp": "123" as a number).
        claims = jwt.decode(
            token,
            key,  # type: ignore[arg-type]
            algorithms=[algorithm],
            issuer=issuer,
            audience=audience,
            options={
                "require": ["exp", "sub", *(["iss"] if issuer else []), *(["aud"] if audience else [])],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(_reason(exc)) from None
    expires = _numeric_date(claims, "exp")
    if expires is None:
        raise Unauthenticated("invalid token: the exp claim is required")
    now = time.time()
    if expires <= now - LEEWAY_SECONDS:
        raise Unauthenticated("token expired")
    for name in ("nbf", "iat"):
        moment = _numeric_date(claims, name)
        if moment is not None and moment > now + LEEWAY_SECONDS:
            raise Unauthenticated("invalid token: not valid yet (nbf or iat is in the future)")
    sub, orgs, scope = claims.get("sub"), claims.get("orgs", []), claims.get("scope", "")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_SUBJECT_LENGTH or "\x00" in sub:
        raise Unauthenticated(f"invalid token: sub must be a string of 1 to {MAX_SUBJECT_LENGTH} characters")
    if not isinstance(orgs, list) or not isinstance(scope, str):
        raise Unauthenticated("invalid token: orgs must be a list and scope a string")
    try:
        org_ids = frozenset(uuid.UUID(str(org)) for org in orgs)
    except ValueError:
        raise Unauthenticated("invalid token: orgs must hold UUIDs") from None
    return Principal(subject=sub, orgs=org_ids, scopes=frozenset(scope.split())), expires


class TokenVerifier:
    """HS256 tokens signed with AUTH_JWT_SECRET (when set), and, when AUTH_JWKS_URL is set, RS256 tokens from
    an identity provider whose public keys are fetched from that JWKS URL (cached for 5 minutes,
    refetched for an unknown ``kid``).

    The algorithm decides the key, never the other way round: an HS256 token is only ever
    checked against the shared secrets and an RS256 token only against the provider's RSA keys,
    so a token cannot pick a public key as its HMAC secret; anything else is refused.

    ``previous_secrets`` (AUTH_JWT_PREVIOUS_SECRETS) are former HS256 keys, for rotating the
    secret without downtime: a token that does not verify under ``secret`` is tried under each of
    them in turn, and refused with the error ``secret`` gave if none verifies it. Tokens are only
    ever minted with ``secret``.
    """

    def __init__(
        self,
        secret: str | None,
        *,
        issuer: str | None,
        audience: str | None,
        jwks_url: str | None = None,
        previous_secrets: tuple[str, ...] = (),
    ) -> None:
        self._secret = secret
        self._previous_secrets = tuple(previous_secrets)
        self._issuer = issuer
        self._audience = audience
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5) if jwks_url else None
        #: token -> (caller, deadline in seconds since the epoch). Keyed by the whole token,
        #: signature included, so only a byte-identical copy of a token that verified can hit.
        self._recent: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def verify(self, header: str | None) -> Principal:
        token = bearer_token(header)
        now = time.time()
        if (hit := self._recent.get(token)) is not None:
            if now < hit[1]:
                self._recent.move_to_end(token)
                return hit[0]
            del self._recent[token]
        principal, expires = await self._verify(token)
        deadline = min(expires + LEEWAY_SECONDS, now + VERIFIED_TOKEN_SECONDS)
        if deadline > now:
            self._recent[token] = (principal, deadline)
            if len(self._recent) > VERIFIED_TOKEN_CAPACITY:
                self._recent.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(_reason(exc)) from None
        if algorithm == ALGORITHM and self._secret is not None:
            return self._verify_hs256(token, self._secret)
        if algorithm == "RS256" and self._jwks is not None:
            try:
                # PyJWKClient fetches with urllib: keep that off the event loop.
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
            except jwt.PyJWKClientConnectionError as exc:
                raise IdentityProviderUnavailable(
                    f"the identity provider's keys are unavailable: {exc}"
                ) from None
            except jwt.PyJWKClientError:
                raise Unauthenticated(
                    "invalid token: its key (kid) is not one the identity provider publishes"
                ) from None
            except jwt.InvalidTokenError as exc:
                raise Unauthenticated(_reason(exc)) from None
        else:
            accepted = " or ".join(
                name for name, on in ((ALGORITHM, self._secret), ("RS256", self._jwks)) if on is not None
            )
            raise Unauthenticated(
                f"invalid token: its algorithm (alg) is not accepted; this API takes {accepted}"
            )
        return verify_token(token, key, str(algorithm), issuer=self._issuer, audience=self._audience)

    def _verify_hs256(self, token: str, secret: str) -> tuple[Principal, float]:
        """The current secret first, then each previous one; the current secret's error if none
        verifies the token."""
        try:
            return verify_token(token, secret, ALGORITHM, issuer=self._issuer, audience=self._audience)
        except Unauthenticated:
            for number, previous in enumerate(self._previous_secrets, 1):
                try:
                    principal, expires = verify_token(
                        token, previous, ALGORITHM, issuer=self._issuer, audience=self._audience
                    )
                except Unauthenticated:
                    continue
                # Once a minute per token at most (verified tokens are remembered): when these
                # stop, no live token needs the previous secret any more.
                log.info(
                    "token verified with a previous secret",
                    extra={"previous_secret": number, "subject": principal.subject},
                )
                return principal, expires
            raise


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
