"""Bearer tokens: what the HS256 path accepts and refuses, and what Principal.require allows."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import jwt
import pytest

from service.api import auth
from service.api.auth import (
    ALGORITHM,
    LEEWAY_SECONDS,
    READ,
    WRITE,
    Principal,
    TokenVerifier,
    bearer_token,
    mint_token,
    verify_token,
)
from service.errors import Forbidden, Unauthenticated
from tests.support.fakes import ORG_A, ORG_B, SECRET


def principal_from_header(
    header: str | None, secret: str, *, issuer: str | None = None, audience: str | None = None
) -> Principal:
    """The HS256 path of TokenVerifier, synchronously: the header's token against the secret."""
    return verify_token(bearer_token(header), secret, ALGORITHM, issuer=issuer, audience=audience)[0]


def bearer(token: str) -> str:
    return f"Bearer {token}"


def hs256(claims: dict[str, Any], secret: str = SECRET) -> str:
    """A token signed by hand with PyJWT, for claims mint_token cannot produce."""
    return jwt.encode(claims, secret, algorithm="HS256")


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def valid_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "alice@example.com",
        "orgs": [str(ORG_A)],
        "scope": f"{READ} {WRITE}",
        "exp": int(time.time()) + 600,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not ...}


def refused(header: str | None, secret: str = SECRET) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        principal_from_header(header, secret)
    return caught.value


def test_minted_token_gives_its_principal() -> None:
    token = mint_token(SECRET, subject="alice@example.com", orgs=[ORG_A, ORG_B], scopes=[READ, WRITE])
    principal = principal_from_header(bearer(token), SECRET)
    assert principal == Principal(
        subject="alice@example.com", orgs=frozenset({ORG_A, ORG_B}), scopes=frozenset({READ, WRITE})
    )


def test_scheme_is_case_insensitive() -> None:
    token = mint_token(SECRET, subject="bob", orgs=[ORG_A], scopes=[READ])
    assert principal_from_header(f"bearer {token}", SECRET).subject == "bob"


def test_token_without_orgs_or_scope_grants_nothing() -> None:
    principal = principal_from_header(bearer(hs256(valid_claims(orgs=..., scope=...))), SECRET)
    assert principal.orgs == frozenset()
    assert principal.scopes == frozenset()


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header_is_unauthenticated(header: str | None) -> None:
    refused(header)


@pytest.mark.parametrize("scheme", ["Basic", "Token", "JWT"])
def test_wrong_scheme_is_unauthenticated(scheme: str) -> None:
    token = mint_token(SECRET, subject="alice", orgs=[ORG_A], scopes=[READ])
    refused(f"{scheme} {token}")


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer    "])
def test_bearer_without_token_is_unauthenticated(header: str) -> None:
    refused(header)


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "e30.e30.", "x" * 300])
def test_garbage_token_is_unauthenticated(token: str) -> None:
    refused(bearer(token))


def test_token_signed_with_another_secret_is_unauthenticated() -> None:
    token = mint_token("another-secret-that-is-also-long-enough!", subject="a", orgs=[ORG_A], scopes=[READ])
    refused(bearer(token))


def test_tampered_payload_is_unauthenticated() -> None:
    # Given a valid token whose payload is swapped for one granting another org
    header, _, signature = mint_token(SECRET, subject="a", orgs=[ORG_A], scopes=[READ]).split(".")
    forged = f"{header}.{b64url(valid_claims(orgs=[str(ORG_B)]))}.{signature}"
    refused(bearer(forged))


def test_expired_token_is_unauthenticated() -> None:
    token = hs256(valid_claims(exp=int(time.time()) - LEEWAY_SECONDS - 60))
    error = refused(bearer(token))
    assert "expired" in error.detail


def test_token_expired_within_the_leeway_is_still_accepted() -> None:
    token = hs256(valid_claims(exp=int(time.time()) - LEEWAY_SECONDS // 3))
    assert principal_from_header(bearer(token), SECRET).subject == "alice@example.com"


def test_mint_token_with_negative_ttl_is_refused() -> None:
    token = mint_token(SECRET, subject="a", orgs=[ORG_A], scopes=[READ], ttl_seconds=-3600)
    refused(bearer(token))


def test_alg_none_token_is_unauthenticated() -> None:
    # Given an unsigned token crafted by hand, with claims that would otherwise be valid
    token = f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url(valid_claims())}."
    refused(bearer(token))


def test_hs512_token_is_unauthenticated() -> None:
    token = jwt.encode(valid_claims(), SECRET, algorithm="HS512")
    refused(bearer(token))


@pytest.mark.parametrize("missing", ["sub", "exp"])
def test_token_without_a_required_claim_is_unauthenticated(missing: str) -> None:
    refused(bearer(hs256(valid_claims(**{missing: ...}))))


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": 10**400},  # a JSON number no float holds: once a 500 (OverflowError)
        {"exp": str(int(time.time()) + 600)},  # a string PyJWT would take as a number
        {"exp": None},  # "no expiry"
        {"exp": True},
        {"exp": 10**12},  # the year 33658
        {"exp": -1},
        {"iat": "yesterday"},
        {"iat": 10**400},
        {"nbf": str(int(time.time()) - 60)},
        {"nbf": 1e308 * 10},  # infinity, written as a huge float
    ],
)
def test_a_date_claim_that_is_not_a_number_in_range_is_unauthenticated(claims: dict[str, Any]) -> None:
    # Given an otherwise valid, correctly signed token whose exp, iat or nbf is malformed
    token = jwt.encode(valid_claims(**claims), SECRET, algorithm="HS256")
    # When it is verified, then it is a 401 that names the claim, never a crash
    error = refused(bearer(token))
    assert any(name in error.detail for name in claims), error.detail


@pytest.mark.parametrize(
    ("make_token", "detail"),
    [
        (
            lambda: hs256(valid_claims(), secret="another-secret-of-32-bytes-or-more-!!"),
            "the signature does not verify",
        ),
        (lambda: "not.a.jwt", "not a well-formed signed JWT"),
        (lambda: hs256(valid_claims(exp=...)), "the exp claim is required"),
        (lambda: hs256(valid_claims(nbf=int(time.time()) + 3600)), "not valid yet"),
    ],
)
def test_refusals_are_worded_by_the_service_not_the_library(
    make_token: Callable[[], str], detail: str
) -> None:
    # (each token is made when its test runs: made at collection, a valid one had expired by the
    # time a long suite reached it, and was refused for that instead)
    error = refused(bearer(make_token()))
    assert error.detail.startswith(f"invalid token: {detail}"), error.detail


@pytest.mark.parametrize(
    "secret",
    [
        "analytics-exports-dev-secret-change-me-in-production",
        "change-me-to-a-random-secret-of-32-bytes-or-more",
    ],
)
async def test_a_token_forged_with_a_published_secret_is_refused(secret: str) -> None:
    # Given an API configured with its own secret, and a token minted with a secret this
    # repository once published (the old development default, the compose placeholder)
    verifier = TokenVerifier(SECRET, issuer=None, audience=None)
    forged = mint_token(secret, subject="mallory", orgs=[ORG_A], scopes=[READ, WRITE])
    # When it is presented, then it is refused
    with pytest.raises(Unauthenticated, match="signature does not verify"):
        await verifier.verify(bearer(forged))


async def test_without_a_shared_secret_hs256_tokens_are_refused() -> None:
    # An API that trusts only an identity provider (AUTH_JWKS_URL) has no HS256 key to try
    verifier = TokenVerifier(None, issuer=None, audience=None, jwks_url="https://idp.example.com/jwks")
    token = mint_token(SECRET, subject="a", orgs=[ORG_A], scopes=[READ])
    with pytest.raises(Unauthenticated, match="this API takes RS256"):
        await verifier.verify(bearer(token))


@pytest.mark.parametrize("sub", ["", "   ", "x" * 257, "nul\x00byte"])
def test_blank_subject_is_unauthenticated(sub: str) -> None:
    refused(bearer(hs256(valid_claims(sub=sub))))


@pytest.mark.parametrize("orgs", [str(ORG_A), {"org": str(ORG_A)}, 7])
def test_orgs_not_a_list_is_unauthenticated(orgs: object) -> None:
    refused(bearer(hs256(valid_claims(orgs=orgs))))


@pytest.mark.parametrize("orgs", [["not-a-uuid"], [str(ORG_A), "acme"], [12], [None]])
def test_orgs_with_a_non_uuid_is_unauthenticated(orgs: list[object]) -> None:
    refused(bearer(hs256(valid_claims(orgs=orgs))))


@pytest.mark.parametrize("scope", [["exports:read"], 1])
def test_scope_not_a_string_is_unauthenticated(scope: object) -> None:
    refused(bearer(hs256(valid_claims(scope=scope))))


def test_require_passes_with_scope_and_org() -> None:
    principal = Principal(subject="a", orgs=frozenset({ORG_A}), scopes=frozenset({READ}))
    principal.require(ORG_A, READ)  # no exception


def test_require_refuses_a_missing_scope() -> None:
    principal = Principal(subject="a", orgs=frozenset({ORG_A}), scopes=frozenset({READ}))
    with pytest.raises(Forbidden, match=WRITE):
        principal.require(ORG_A, WRITE)


def test_require_refuses_an_org_not_granted() -> None:
    principal = Principal(subject="a", orgs=frozenset({ORG_A}), scopes=frozenset({READ, WRITE}))
    with pytest.raises(Forbidden, match=str(ORG_B)):
        principal.require(ORG_B, READ)
    with pytest.raises(Forbidden):
        principal.require(uuid.uuid4(), WRITE)


def test_scopes_are_whole_words() -> None:
    # "exports:read-only" is not "exports:read"
    principal = principal_from_header(bearer(hs256(valid_claims(scope="exports:read-only"))), SECRET)
    with pytest.raises(Forbidden):
        principal.require(ORG_A, READ)


def test_issuer_and_audience_are_enforced_when_configured() -> None:
    good = mint_token(
        SECRET, subject="a", orgs=[ORG_A], scopes=[READ], issuer="https://idp", audience="exports"
    )
    principal = principal_from_header(bearer(good), SECRET, issuer="https://idp", audience="exports")
    assert principal.subject == "a"
    for token in (
        mint_token(
            SECRET, subject="a", orgs=[ORG_A], scopes=[READ], issuer="https://other", audience="exports"
        ),
        mint_token(
            SECRET, subject="a", orgs=[ORG_A], scopes=[READ], issuer="https://idp", audience="billing"
        ),
        mint_token(SECRET, subject="a", orgs=[ORG_A], scopes=[READ]),  # neither claim
    ):
        with pytest.raises(Unauthenticated):
            principal_from_header(bearer(token), SECRET, issuer="https://idp", audience="exports")


class TestVerifiedTokenMemory:
    """TokenVerifier remembers tokens it verified, for VERIFIED_TOKEN_SECONDS and never past exp."""

    @staticmethod
    def counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
        calls: list[str] = []
        real = auth.verify_token

        def spy(token: str, *args: Any, **kwargs: Any) -> tuple[Principal, float]:
            calls.append(token)
            return real(token, *args, **kwargs)

        monkeypatch.setattr(auth, "verify_token", spy)
        return calls

    async def test_a_repeated_token_is_verified_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # Given a verifier and a valid token
        calls = self.counting(monkeypatch)
        verifier = TokenVerifier(SECRET, issuer=None, audience=None)
        token = mint_token(SECRET, subject="ana", orgs=[ORG_A], scopes=[READ])
        # When it is presented three times
        principals = [await verifier.verify(bearer(token)) for _ in range(3)]
        # Then the signature was checked once and every call got the same caller
        assert calls == [token]
        assert {p.subject for p in principals} == {"ana"}

    async def test_a_tampered_copy_is_not_served_from_memory(self) -> None:
        # Given a token that verified
        verifier = TokenVerifier(SECRET, issuer=None, audience=None)
        token = mint_token(SECRET, subject="ana", orgs=[ORG_A], scopes=[READ])
        await verifier.verify(bearer(token))
        # When the same claims come with another signature, then they are checked and refused
        forged = token.rsplit(".", 1)[0] + "." + base64.urlsafe_b64encode(b"x" * 32).rstrip(b"=").decode()
        with pytest.raises(Unauthenticated):
            await verifier.verify(bearer(forged))

    async def test_memory_ends_at_the_tokens_expiry(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # Given a token that expires (with the leeway) 5 seconds from now, verified once
        calls = self.counting(monkeypatch)
        verifier = TokenVerifier(SECRET, issuer=None, audience=None)
        token = hs256({"sub": "ana", "orgs": [str(ORG_A)], "exp": int(time.time()) + 5 - LEEWAY_SECONDS})
        await verifier.verify(bearer(token))
        # When the verifier's clock moves past that expiry, then the token is checked again (and
        # found expired), not answered from memory
        later = time.time() + 6
        monkeypatch.setattr(auth, "time", SimpleNamespace(time=lambda: later))
        with pytest.raises(Unauthenticated, match="token expired"):
            await verifier.verify(bearer(token))
        assert calls == [token, token]

    async def test_memory_is_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # Given a verifier that has seen more distinct tokens than it may remember
        monkeypatch.setattr(auth, "VERIFIED_TOKEN_CAPACITY", 3)
        calls = self.counting(monkeypatch)
        verifier = TokenVerifier(SECRET, issuer=None, audience=None)
        tokens = [mint_token(SECRET, subject=f"user-{i}", orgs=[ORG_A], scopes=[READ]) for i in range(4)]
        for token in tokens:
            await verifier.verify(bearer(token))
        # When the first (least recently used) comes back, then it is verified again
        await verifier.verify(bearer(tokens[0]))
        assert calls == [*tokens, tokens[0]]


class TestPreviousSecrets:
    """AUTH_JWT_PREVIOUS_SECRETS: tokens signed with a former secret still verify while the secret
    is rotated; the current secret is tried first, and a token no secret verifies gets the error
    it gets today."""

    #: 64 bytes and more, so that signing the HS512 token below draws no key-length warning.
    OLD = "the-previous-signing-secret-of-at-least-32-bytes-long-enough-for-hs512"
    OLDER = "an-even-older-signing-secret-of-at-least-32-bytes"
    UNKNOWN = "a-secret-this-service-has-never-been-told-about!"

    @staticmethod
    def keys_tried(monkeypatch: pytest.MonkeyPatch) -> list[object]:
        tried: list[object] = []
        real = auth.verify_token

        def spy(token: str, key: object, *args: Any, **kwargs: Any) -> tuple[Principal, float]:
            tried.append(key)
            return real(token, key, *args, **kwargs)

        monkeypatch.setattr(auth, "verify_token", spy)
        return tried

    def rotated(self, **kwargs: Any) -> TokenVerifier:
        """A verifier after a rotation: SECRET is the new secret, OLD and OLDER the former ones."""
        return TokenVerifier(
            SECRET, issuer=None, audience=None, previous_secrets=(self.OLD, self.OLDER), **kwargs
        )

    async def test_a_token_signed_with_a_previous_secret_is_accepted(self) -> None:
        for secret in (self.OLD, self.OLDER):
            token = mint_token(secret, subject="ana", orgs=[ORG_A], scopes=[READ])
            principal = await self.rotated().verify(bearer(token))
            assert principal == Principal(subject="ana", orgs=frozenset({ORG_A}), scopes=frozenset({READ}))

    async def test_the_current_secret_is_tried_first(self, monkeypatch: pytest.MonkeyPatch) -> None:
        tried = self.keys_tried(monkeypatch)
        # A token signed with the current secret is checked against it alone
        await self.rotated().verify(bearer(mint_token(SECRET, subject="ana", orgs=[ORG_A], scopes=[READ])))
        assert tried == [SECRET]
        # A token of the older secret is tried against the current one, then the previous in order
        tried.clear()
        await self.rotated().verify(
            bearer(mint_token(self.OLDER, subject="ana", orgs=[ORG_A], scopes=[READ]))
        )
        assert tried == [SECRET, self.OLD, self.OLDER]

    async def test_a_token_no_secret_verifies_gets_the_error_it_gets_without_rotation(self) -> None:
        # Given a token signed with a secret the service does not know
        token = mint_token(self.UNKNOWN, subject="ana", orgs=[ORG_A], scopes=[READ])
        # When a verifier without previous secrets and one with them check it
        with pytest.raises(Unauthenticated) as without:
            await TokenVerifier(SECRET, issuer=None, audience=None).verify(bearer(token))
        with pytest.raises(Unauthenticated) as rotated:
            await self.rotated().verify(bearer(token))
        # Then both refuse it, with the same problem
        assert rotated.value.detail == without.value.detail
        assert type(rotated.value) is type(without.value)

    async def test_without_previous_secrets_an_old_token_is_refused(self) -> None:
        token = mint_token(self.OLD, subject="ana", orgs=[ORG_A], scopes=[READ])
        with pytest.raises(Unauthenticated):
            await TokenVerifier(SECRET, issuer=None, audience=None).verify(bearer(token))

    async def test_an_expired_token_of_a_previous_secret_is_refused(self) -> None:
        token = hs256(valid_claims(exp=int(time.time()) - LEEWAY_SECONDS - 60), secret=self.OLD)
        with pytest.raises(Unauthenticated):
            await self.rotated().verify(bearer(token))

    async def test_an_expired_token_of_the_current_secret_is_still_refused_as_expired(self) -> None:
        token = hs256(valid_claims(exp=int(time.time()) - LEEWAY_SECONDS - 60))
        with pytest.raises(Unauthenticated, match="expired"):
            await self.rotated().verify(bearer(token))

    async def test_previous_secrets_accept_only_hs256(self) -> None:
        token = jwt.encode(valid_claims(), self.OLD, algorithm="HS512")
        with pytest.raises(Unauthenticated, match="not accepted"):
            await self.rotated().verify(bearer(token))

    async def test_issuer_and_audience_apply_to_previous_secrets_too(self) -> None:
        verifier = TokenVerifier(
            SECRET, issuer="https://idp", audience="exports", previous_secrets=(self.OLD,)
        )
        good = mint_token(
            self.OLD, subject="a", orgs=[ORG_A], scopes=[READ], issuer="https://idp", audience="exports"
        )
        assert (await verifier.verify(bearer(good))).subject == "a"
        wrong_audience = mint_token(
            self.OLD, subject="a", orgs=[ORG_A], scopes=[READ], issuer="https://idp", audience="billing"
        )
        with pytest.raises(Unauthenticated):
            await verifier.verify(bearer(wrong_audience))

    async def test_a_tampered_token_of_a_previous_secret_is_refused(self) -> None:
        header, _, signature = mint_token(self.OLD, subject="a", orgs=[ORG_A], scopes=[READ]).split(".")
        forged = f"{header}.{b64url(valid_claims(orgs=[str(ORG_B)]))}.{signature}"
        with pytest.raises(Unauthenticated):
            await self.rotated().verify(bearer(forged))

    async def test_a_previous_secrets_token_is_remembered_like_any_other(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tried = self.keys_tried(monkeypatch)
        verifier = self.rotated()
        token = mint_token(self.OLD, subject="ana", orgs=[ORG_A], scopes=[READ])
        for _ in range(3):
            await verifier.verify(bearer(token))
        assert tried == [SECRET, self.OLD]

    async def test_using_a_previous_secret_is_logged_without_the_secret(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        token = mint_token(self.OLDER, subject="ana", orgs=[ORG_A], scopes=[READ])
        with caplog.at_level("INFO", logger=auth.__name__):
            await self.rotated().verify(bearer(token))
        [record] = [r for r in caplog.records if r.name == auth.__name__]
        assert record.getMessage() == "token verified with a previous secret"
        assert record.__dict__["previous_secret"] == 2
        assert self.OLDER not in str(record.__dict__)
