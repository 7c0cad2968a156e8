"""The REST contract against the running API: status codes, problem bodies, job fields, paging."""

from __future__ import annotations

import uuid
from typing import cast

import aiohttp
import asyncpg
import pytest

from service.api.auth import READ, mint_token
from service.api.schemas import SCHEMAS
from tests.e2e.conftest import Stack, create_export, wait_for_job

pytestmark = pytest.mark.usefixtures("clean_state")
BODY = {"timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-02T00:00:00Z"}, "granularity": "daily"}
#: Every field the published schema requires of a job.
JOB_FIELDS = set(cast(list[str], SCHEMAS["ExportJob"]["required"]))


async def problem(reply: aiohttp.ClientResponse, status: int) -> dict[str, object]:
    assert reply.status == status, await reply.text()
    assert reply.content_type == "application/problem+json"
    body: dict[str, object] = await reply.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


async def test_created_job_has_every_field(stack: Stack, http: aiohttp.ClientSession) -> None:
    org = uuid.uuid4()
    job = await create_export(http, stack, org, {**BODY, "models": ["m1", "m1", "m2"]})
    assert job.keys() == JOB_FIELDS
    assert job["status"] == "pending"
    assert job["requestedBy"] == "finance@example.com"
    assert job["models"] == ["m1", "m2"]
    assert job["timeRange"] == {"start": "2026-10-01T00:00:00Z", "end": "2026-10-02T00:00:00Z"}
    assert str(job["initiatedAt"]).endswith("Z")
    done = await wait_for_job(http, stack, org, str(job["jobId"]))
    assert done["status"] == "succeeded"
    assert str(done["completedAt"]).endswith("Z")
    assert str(done["expiresAt"]).endswith("Z")


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "required"),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, "Bearer"),
        ({"Authorization": "Bearer not.a.jwt"}, "invalid token"),
    ],
)
async def test_401_without_a_valid_token(
    stack: Stack, http: aiohttp.ClientSession, headers: dict[str, str], detail: str
) -> None:
    async with http.get(stack.exports_url(uuid.uuid4()), headers=headers) as reply:
        body = await problem(reply, 401)
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert detail in str(body["detail"])


async def test_401_for_a_token_signed_with_another_key_or_expired(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    org = uuid.uuid4()
    forged = mint_token("another-secret-that-is-32-bytes-long!!", subject="x", orgs=[org], scopes=[READ])
    expired = mint_token(
        str(stack.env["AUTH_JWT_SECRET"]), subject="x", orgs=[org], scopes=[READ], ttl_seconds=-120
    )
    for token in (forged, expired):
        async with http.get(stack.exports_url(org), headers={"Authorization": f"Bearer {token}"}) as reply:
            await problem(reply, 401)


async def test_403_for_another_org_or_missing_scope(stack: Stack, http: aiohttp.ClientSession) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    async with http.get(stack.exports_url(theirs), headers=stack.auth(mine)) as reply:
        await problem(reply, 403)
    async with http.post(stack.exports_url(mine), json=BODY, headers=stack.auth(mine, scope=READ)) as reply:
        await problem(reply, 403)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BODY, "format": "xlsx"}, "format"),
        (
            {**BODY, "timeRange": {"start": "2026-10-01T00:00:00", "end": "2026-10-02T00:00:00Z"}},
            "timeRange.start",
        ),
        (
            {**BODY, "timeRange": {"start": "2026-10-02T00:00:00Z", "end": "2026-10-01T00:00:00Z"}},
            "timeRange",
        ),
        (
            {**BODY, "timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:01Z"}},
            "timeRange",
        ),
        ({**BODY, "granularity": "weekly"}, "granularity"),
        ({**BODY, "models": "gpt-4o"}, "models"),
        ({"granularity": "daily"}, "timeRange"),
    ],
)
async def test_400_names_the_offending_field(
    stack: Stack, http: aiohttp.ClientSession, body: dict[str, object], field: str
) -> None:
    org = uuid.uuid4()
    async with http.post(stack.exports_url(org), json=body, headers=stack.auth(org)) as reply:
        problem_body = await problem(reply, 400)
    assert field in problem_body["errors"]  # type: ignore[operator]


async def test_malformed_json_non_json_and_oversized_bodies(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    org = uuid.uuid4()
    headers = {**stack.auth(org), "Content-Type": "application/json"}
    async with http.post(stack.exports_url(org), data=b"{nope", headers=headers) as reply:
        await problem(reply, 400)
    async with http.post(stack.exports_url(org), data=b"a=b", headers={**stack.auth(org)}) as reply:
        await problem(reply, 415)
    async with http.post(stack.exports_url(org), data=b" " * 100_000, headers=headers) as reply:
        await problem(reply, 413)


async def test_404_for_unknown_or_another_orgs_job_and_400_for_bad_ids(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    org, other = uuid.uuid4(), uuid.uuid4()
    job = await create_export(http, stack, other, BODY)
    both = stack.auth(org, other)
    for suffix in ("", "/download"):
        async with http.get(f"{stack.exports_url(org)}/{job['jobId']}{suffix}", headers=both) as reply:
            await problem(reply, 404)
        async with http.get(f"{stack.exports_url(org)}/{uuid.uuid4()}{suffix}", headers=both) as reply:
            await problem(reply, 404)
        async with http.get(f"{stack.exports_url(org)}/not-a-uuid{suffix}", headers=both) as reply:
            await problem(reply, 400)
    async with http.get(f"{stack.base}/analytics/v1/orgs/not-a-uuid/exports", headers=both) as reply:
        await problem(reply, 400)


async def test_download_409_until_succeeded_and_410_once_expired(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    org = uuid.uuid4()
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        # Given a job held back as pending (inserted directly: no message, so no worker takes it)
        job_id = await conn.fetchval(
            """INSERT INTO analytics.export_jobs (job_id, org_id, requested_by, time_range_start,
               time_range_end, granularity, enqueued_at)
               VALUES (gen_random_uuid(), $1, 'x', now() - interval '1 day', now(), 'daily', now())
               RETURNING job_id""",
            org,
        )
        url = f"{stack.exports_url(org)}/{job_id}/download"
        async with http.get(url, headers=stack.auth(org), allow_redirects=False) as reply:
            await problem(reply, 409)
        await conn.execute("UPDATE analytics.export_jobs SET status = 'failed' WHERE job_id = $1", job_id)
        async with http.get(url, headers=stack.auth(org), allow_redirects=False) as reply:
            await problem(reply, 409)
        await conn.execute("UPDATE analytics.export_jobs SET status = 'expired' WHERE job_id = $1", job_id)
        async with http.get(url, headers=stack.auth(org), allow_redirects=False) as reply:
            await problem(reply, 410)
    finally:
        await conn.close()


async def test_presigned_url_lives_as_long_as_the_job(stack: Stack, http: aiohttp.ClientSession) -> None:
    org = uuid.uuid4()
    job = await wait_for_job(http, stack, org, str((await create_export(http, stack, org, BODY))["jobId"]))
    url = f"{stack.exports_url(org)}/{job['jobId']}/download"
    async with http.get(url, headers=stack.auth(org), allow_redirects=False) as reply:
        assert reply.status == 302
        location = reply.headers["Location"]
    expires = int(location.split("X-Amz-Expires=")[1].split("&")[0])
    ttl = stack.settings.export_signed_url_ttl
    assert ttl - 60 < expires <= ttl


async def test_list_pages_every_job_once_newest_first_with_status_filter(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    org = uuid.uuid4()
    created = [str((await create_export(http, stack, org, BODY))["jobId"]) for _ in range(5)]
    seen: list[str] = []
    url = f"{stack.exports_url(org)}?limit=2"
    while True:
        async with http.get(url, headers=stack.auth(org)) as reply:
            assert reply.status == 200
            page = await reply.json()
        seen.extend(item["jobId"] for item in page["items"])
        if page["nextCursor"] is None:
            break
        url = f"{stack.exports_url(org)}?limit=2&cursor={page['nextCursor']}"
    assert seen == created[::-1]
    for job_id in created:
        await wait_for_job(http, stack, org, job_id)
    async with http.get(f"{stack.exports_url(org)}?status=succeeded", headers=stack.auth(org)) as reply:
        assert len((await reply.json())["items"]) == 5
    async with http.get(f"{stack.exports_url(org)}?status=pending", headers=stack.auth(org)) as reply:
        assert (await reply.json())["items"] == []
    for bad in ("limit=0", "limit=201", "status=done", "cursor=garbage"):
        async with http.get(f"{stack.exports_url(org)}?{bad}", headers=stack.auth(org)) as reply:
            await problem(reply, 400)


async def test_health_readiness_and_openapi(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{stack.base}/healthz") as reply:
        assert reply.status == 200
    # Readiness with its checks on the operators' port (METRICS_PORT) ...
    async with http.get(stack.api_metrics.removesuffix("/metrics") + "/readyz") as reply:
        body = await reply.json()
        assert reply.status == 200, body
        assert set(body["checks"]) == {
            "database",
            "rollups",
            "broker",
            "bucket:analytics-exports",
            "bucket:acme-finance-exports",
        }
    # ... and on the public port only whether it is ready; no metrics there, no server version
    async with http.get(f"{stack.base}/readyz") as reply:
        assert (reply.status, await reply.json()) == (200, {"status": "ready"})
        assert "Server" not in reply.headers
    async with http.get(f"{stack.base}/metrics") as reply:
        assert reply.status == 404
    async with http.get(f"{stack.base}/analytics/v1/openapi.json") as reply:
        assert reply.status == 200
        assert "/analytics/v1/orgs/{orgId}/exports" in (await reply.json())["paths"]


async def test_the_audit_trail_lists_the_lifecycle_and_counts_downloads(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    org = uuid.uuid4()
    job = await wait_for_job(http, stack, org, str((await create_export(http, stack, org, BODY))["jobId"]))
    url = f"{stack.exports_url(org)}/{job['jobId']}"
    for _ in range(2):
        async with http.get(f"{url}/download", headers=stack.auth(org), allow_redirects=False) as reply:
            assert reply.status == 302
    async with http.get(f"{url}/events", headers=stack.auth(org)) as reply:
        assert reply.status == 200
        items = (await reply.json())["items"]
    # Both links went to one caller within minutes: one event that counts them
    assert [e["event"] for e in items] == ["created", "started", "succeeded", "download_url_issued"]
    assert items[3]["details"]["count"] == 2
    assert items[0]["actor"] == "finance@example.com"
    assert items[0]["clientIp"] == "127.0.0.1"
    assert items[1]["actor"].rsplit(":", 1)[1].isdigit()  # the worker, host:pid
    assert items[2]["details"]["checksum"] == job["checksum"]
    assert [e["eventId"] for e in items] == sorted(e["eventId"] for e in items)


async def test_300_downloads_leave_the_trail_bounded_and_paged(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    # Given a succeeded export, and a script that asks for its download link 300 times
    org = uuid.uuid4()
    job = await wait_for_job(http, stack, org, str((await create_export(http, stack, org, BODY))["jobId"]))
    url = f"{stack.exports_url(org)}/{job['jobId']}"
    headers = {**stack.auth(org), "User-Agent": "poller/1"}
    for _ in range(300):
        async with http.get(f"{url}/download", headers=headers, allow_redirects=False) as reply:
            assert reply.status == 302
    # When the trail is read two events at a time
    items, cursor, pages = [], None, 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        async with http.get(f"{url}/events", headers=stack.auth(org), params=params) as reply:
            assert reply.status == 200
            assert reply.headers["Cache-Control"] == "no-store"
            page = await reply.json()
        assert len(page["items"]) <= 2
        items.extend(page["items"])
        pages += 1
        if (cursor := page["nextCursor"]) is None:
            break
    # Then it holds the lifecycle and one download event that counts all 300 links
    assert [e["event"] for e in items] == ["created", "started", "succeeded", "download_url_issued"]
    assert (items[3]["userAgent"], items[3]["details"]["count"]) == ("poller/1", 300)
    assert pages == 2
