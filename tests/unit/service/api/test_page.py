"""The self-serve page's server side: the shipped files with a strict CSP, nothing else by name,
and GET /me, which tells the page what a token grants."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.api.app import wired_app
from service.api.auth import READ, mint_token
from service.api.page import SITE, s3_origins
from service.settings import Settings
from tests.support.fakes import ORG_A, ORG_B, SECRET, FakeQueue

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Any) -> Client:
    settings = Settings(auth_jwt_secret=SECRET, s3_public_endpoint="https://files.example.com:9000")
    return await aiohttp_client(wired_app(settings, FakeQueue()))  # type: ignore[no-any-return]


async def test_the_page_and_its_files_are_served_with_a_strict_policy(client: Client) -> None:
    shipped = sorted(p.name for p in SITE.iterdir() if p.suffix in (".html", ".js", ".css"))
    assert "index.html" in shipped
    for path in ["/analytics/", *(f"/analytics/{name}" for name in shipped)]:
        async with client.get(path) as reply:
            assert reply.status == 200, path
            policy = reply.headers["Content-Security-Policy"]
            for directive in (
                "default-src 'none'",
                "script-src 'self'",
                "style-src 'self'",
                "form-action 'none'",
                "base-uri 'none'",
                "frame-ancestors 'none'",  # never framed: no clickjacking
            ):
                assert directive in policy.split("; "), (directive, policy)
            assert "unsafe" not in policy
            assert "connect-src 'self' https://files.example.com:9000;" in policy
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            assert reply.headers["Referrer-Policy"] == "no-referrer"
    async with client.get("/analytics/app.js") as reply:
        assert reply.content_type == "text/javascript"
    async with client.get("/analytics", allow_redirects=False) as reply:
        assert (reply.status, reply.headers["Location"]) == (301, "/analytics/")


@pytest.mark.parametrize(
    "path",
    [
        "/analytics/nope.js",
        "/analytics/.hidden.js",
        "/analytics/..%2Fpage.py",
        "/analytics/page.py",
        "/analytics/v1",
    ],
)
async def test_nothing_but_the_shipped_files_can_be_named(client: Client, path: str) -> None:
    async with client.get(path) as reply:
        assert reply.status == 404


def test_downloads_may_come_from_aws_when_no_endpoint_is_set() -> None:
    origins = s3_origins(Settings(s3_region="eu-west-1"))
    assert "https://*.s3.eu-west-1.amazonaws.com" in origins.split()
    assert s3_origins(Settings(s3_endpoint="http://127.0.0.1:9000/")) == "http://127.0.0.1:9000"


async def test_me_says_what_the_token_grants_and_needs_a_valid_one(client: Client) -> None:
    token = mint_token(SECRET, subject="ana@example.com", orgs=[ORG_B, ORG_A], scopes=[READ])
    async with client.get("/analytics/v1/me", headers={"Authorization": f"Bearer {token}"}) as reply:
        assert reply.status == 200
        assert await reply.json() == {
            "subject": "ana@example.com",
            "orgs": sorted([str(ORG_A), str(ORG_B)]),
            "scopes": [READ],
        }
    async with client.get("/analytics/v1/me") as reply:
        assert reply.status == 401
    forged = mint_token(
        "another-secret-that-is-long-enough-to-be-one", subject="x", orgs=[uuid.uuid4()], scopes=[]
    )
    async with client.get("/analytics/v1/me", headers={"Authorization": f"Bearer {forged}"}) as reply:
        assert reply.status == 401
