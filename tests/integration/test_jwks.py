"""RS256 tokens verified with keys from a JWKS URL (a real HTTP server on loopback)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.api.auth import READ, TokenVerifier, mint_token
from service.errors import IdentityProviderUnavailable, Unauthenticated

SECRET = "shared-hs256-secret-that-is-32-bytes-long!"
ORG = uuid.UUID("0b6f3c2e-8f57-4a4e-9d1c-3a1f4f0e9a01")
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_document() -> bytes:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    return json.dumps({"keys": [{**jwk, "kid": "key-1", "use": "sig", "alg": "RS256"}]}).encode()


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    body = jwks_document()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()


def rs256(key: rsa.RSAPrivateKey, kid: str, **claims: object) -> str:
    payload = {"sub": "idp-user", "orgs": [str(ORG)], "scope": READ, "exp": 4_102_444_800, **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def verifier(jwks_url: str | None) -> TokenVerifier:
    return TokenVerifier(SECRET, issuer=None, audience=None, jwks_url=jwks_url)


async def test_an_rs256_token_from_the_identity_provider_is_accepted(jwks_url: str) -> None:
    principal = await verifier(jwks_url).verify(f"Bearer {rs256(KEY, 'key-1')}")
    assert (principal.subject, principal.orgs) == ("idp-user", frozenset({ORG}))


async def test_hs256_tokens_still_work_beside_the_jwks(jwks_url: str) -> None:
    token = mint_token(SECRET, subject="svc", orgs=[ORG], scopes=[READ])
    assert (await verifier(jwks_url).verify(f"Bearer {token}")).subject == "svc"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: rs256(OTHER_KEY, "key-1"), id="signed-by-another-key"),
        pytest.param(lambda: rs256(KEY, "no-such-kid"), id="unknown-kid"),
        pytest.param(lambda: rs256(KEY, "key-1", exp=1), id="expired"),
    ],
)
async def test_bad_rs256_tokens_are_refused(jwks_url: str, token: object) -> None:
    with pytest.raises(Unauthenticated):
        await verifier(jwks_url).verify(f"Bearer {token()}")  # type: ignore[operator]


async def test_the_public_key_cannot_be_used_as_an_hmac_secret(jwks_url: str) -> None:
    # Given a token that claims HS256 and is "signed" with the provider's public key as the secret
    pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "key-1"}).encode())
    payload = b64(
        json.dumps({"sub": "mallory", "orgs": [str(ORG)], "scope": READ, "exp": 4_102_444_800}).encode()
    )
    signature = b64(hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    # Then it is checked against the shared secret only, and refused
    with pytest.raises(Unauthenticated):
        await verifier(jwks_url).verify(f"Bearer {header}.{payload}.{signature}")


async def test_rs256_is_refused_when_no_jwks_is_configured() -> None:
    with pytest.raises(Unauthenticated, match="algorithm"):
        await verifier(None).verify(f"Bearer {rs256(KEY, 'key-1')}")


async def test_an_unreachable_jwks_is_a_503_not_a_401() -> None:
    with pytest.raises(IdentityProviderUnavailable):
        await verifier("http://127.0.0.1:9/jwks.json").verify(f"Bearer {rs256(KEY, 'key-1')}")
