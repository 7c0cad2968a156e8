"""The HTTP API over fakes: status codes, problem+json bodies, headers, pagination."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.api import keys
from service.api.app import MAX_BODY_BYTES, wired_app
from service.api.auth import READ, WRITE, mint_token
from service.api.problems import PROBLEM_TYPE_BASE
from service.api.schemas import SCHEMAS
from service.errors import DatabaseUnavailable, QueueUnavailable, TooManyActiveExports
from service.exports import ExportService
from service.job import Job, JobStatus
from service.repository import JobRepository
from service.settings import Settings
from service.storage import ObjectStore
from tests.support.fakes import (
    ORG_A,
    ORG_B,
    SECRET,
    FakeQueue,
    FakeRepository,
    FakeS3,
    client_error,
    make_job,
    schema_errors,
    succeeded_job,
)

Client = TestClient[web.Request, web.Application]
BASE = "/analytics/v1"
EXPORTS_A = f"{BASE}/orgs/{ORG_A}/exports"
BODY = {
    "timeRange": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-08T00:00:00Z"},
    "granularity": "daily",
    "models": ["gpt-4o"],
}


def token(*, orgs: tuple[uuid.UUID, ...] = (ORG_A,), scopes: tuple[str, ...] = (READ, WRITE)) -> str:
    return mint_token(SECRET, subject="alice@example.com", orgs=orgs, scopes=scopes)


def auth(value: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {value or token()}"}


async def problem(response: Any, status: int) -> dict[str, Any]:
    """Assert ``response`` is an RFC 9457 problem with ``status``; return its body."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    doc: dict[str, Any] = orjson.loads(await response.read())
    assert schema_errors(doc, SCHEMAS["Problem"]) == []
    assert doc["status"] == status
    assert doc["type"].startswith(PROBLEM_TYPE_BASE)
    assert doc["title"]
    assert doc["detail"]
    return doc


@pytest.fixture
def settings() -> Settings:
    # A 20-year retention window keeps the fixed 2026 dates valid in later years.
    # METRICS_PORT 0: metrics and readiness details on the one port the test client talks to.
    return Settings(auth_jwt_secret=SECRET, data_retention_months=240, metrics_port=0)


@pytest.fixture
async def client(
    aiohttp_client: Any, settings: Settings, repo: FakeRepository, s3: FakeS3, queue: FakeQueue
) -> Client:
    # The app create_app builds, with fakes in place of the pool, the S3 client and the broker.
    store = ObjectStore(s3, settings.export_part_size)
    app = wired_app(settings, queue)
    app[keys.REPOSITORY] = cast(JobRepository, repo)
    app[keys.STORE] = store
    app[keys.EXPORTS] = ExportService(cast(JobRepository, repo), store, queue)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


def stored(repo: FakeRepository, job: Job) -> Job:
    repo.jobs[job.job_id] = job
    return job


# --- authentication and authorisation -----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Basic {base64.b64encode(b'alice:pw').decode()}"},
        {"Authorization": f"Bearer {mint_token('x' * 40, subject='a', orgs=[ORG_A], scopes=[READ])}"},
    ],
)
async def test_missing_or_bad_token_is_401(client: Client, headers: dict[str, str]) -> None:
    response = await client.get(EXPORTS_A, headers=headers)
    doc = await problem(response, 401)
    assert doc["type"] == PROBLEM_TYPE_BASE + "unauthenticated"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_expired_token_is_401(client: Client) -> None:
    expired = mint_token(SECRET, subject="a", orgs=[ORG_A], scopes=[READ], ttl_seconds=-3600)
    doc = await problem(await client.get(EXPORTS_A, headers=auth(expired)), 401)
    assert "expired" in doc["detail"]


async def test_another_orgs_exports_are_403(client: Client, repo: FakeRepository) -> None:
    job = stored(repo, make_job(org_id=ORG_B))
    for path in (f"{BASE}/orgs/{ORG_B}/exports", f"{BASE}/orgs/{ORG_B}/exports/{job.job_id}"):
        doc = await problem(await client.get(path, headers=auth()), 403)
        assert doc["type"] == PROBLEM_TYPE_BASE + "forbidden"
    assert repo.called("get") == []


async def test_read_token_cannot_create_an_export(client: Client, repo: FakeRepository) -> None:
    read_only = token(scopes=(READ,))
    response = await client.post(EXPORTS_A, json=BODY, headers=auth(read_only))
    doc = await problem(response, 403)
    assert WRITE in doc["detail"]
    assert repo.jobs == {}


async def test_write_only_token_cannot_list(client: Client) -> None:
    await problem(await client.get(EXPORTS_A, headers=auth(token(scopes=(WRITE,)))), 403)


@pytest.mark.parametrize("org", ["not-a-uuid", "123", "0b6f3c2e-8f57-4a4e-9d1c"])
async def test_malformed_org_id_is_400(client: Client, org: str) -> None:
    doc = await problem(await client.get(f"{BASE}/orgs/{org}/exports", headers=auth()), 400)
    assert "orgId" in doc["errors"]


async def test_malformed_job_id_is_400(client: Client) -> None:
    for suffix in ("", "/download"):
        response = await client.get(f"{EXPORTS_A}/job-42{suffix}", headers=auth(), allow_redirects=False)
        doc = await problem(response, 400)
        assert "jobId" in doc["errors"]


# --- create -------------------------------------------------------------------------------------


async def test_valid_post_is_202_with_location(
    client: Client, repo: FakeRepository, queue: FakeQueue
) -> None:
    response = await client.post(EXPORTS_A, json=BODY, headers=auth())
    assert response.status == 202, await response.text()
    assert response.content_type == "application/json"
    doc = await response.json()
    assert schema_errors(doc, SCHEMAS["ExportJob"]) == []
    job_id = uuid.UUID(doc["jobId"])
    assert response.headers["Location"] == f"{EXPORTS_A}/{job_id}"
    assert doc["status"] == "pending"
    assert doc["orgId"] == str(ORG_A)
    assert doc["requestedBy"] == "alice@example.com"
    assert doc["timeRange"] == BODY["timeRange"]
    assert doc["models"] == ["gpt-4o"]
    assert job_id in repo.jobs
    assert queue.enqueued == [job_id]


async def test_post_with_the_broker_down_is_still_202(client: Client, queue: FakeQueue) -> None:
    queue.down_after = 0
    response = await client.post(EXPORTS_A, json=BODY, headers=auth())
    assert response.status == 202
    assert (await response.json())["status"] == "pending"


async def test_created_job_is_readable_at_its_location(client: Client) -> None:
    created = await client.post(EXPORTS_A, json=BODY, headers=auth())
    fetched = await client.get(created.headers["Location"], headers=auth())
    assert fetched.status == 200
    assert await fetched.json() == await created.json()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_non_json_content_type_is_415(client: Client, repo: FakeRepository, content_type: str) -> None:
    response = await client.post(
        EXPORTS_A, data=orjson.dumps(BODY), headers={**auth(), "Content-Type": content_type}
    )
    await problem(response, 415)
    assert repo.jobs == {}


async def test_json_with_charset_is_accepted(client: Client) -> None:
    response = await client.post(
        EXPORTS_A,
        data=orjson.dumps(BODY),
        headers={**auth(), "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status == 202


@pytest.mark.parametrize("raw", [b"{", b"", b"{'single': 'quotes'}", b"\xff\xfe"])
async def test_invalid_json_is_400(client: Client, raw: bytes) -> None:
    response = await client.post(EXPORTS_A, data=raw, headers={**auth(), "Content-Type": "application/json"})
    doc = await problem(response, 400)
    assert doc["type"] == PROBLEM_TYPE_BASE + "validation-error"


async def test_invalid_body_is_400_naming_the_field(client: Client, repo: FakeRepository) -> None:
    response = await client.post(EXPORTS_A, json={**BODY, "granularity": "weekly"}, headers=auth())
    doc = await problem(response, 400)
    assert "granularity" in doc["errors"]
    assert repo.jobs == {}


async def test_body_over_64_kib_is_413(client: Client, repo: FakeRepository) -> None:
    big = orjson.dumps({**BODY, "models": ["m" * 200] * 400})
    assert len(big) > MAX_BODY_BYTES
    response = await client.post(EXPORTS_A, data=big, headers={**auth(), "Content-Type": "application/json"})
    await problem(response, 413)
    assert repo.jobs == {}


async def test_body_just_under_the_limit_is_read(client: Client) -> None:
    # A large but valid-sized body reaches validation (400 for too many models, not 413)
    body = orjson.dumps({**BODY, "models": [f"m{i:05d}" for i in range(1001)]})
    assert len(body) < MAX_BODY_BYTES
    response = await client.post(EXPORTS_A, data=body, headers={**auth(), "Content-Type": "application/json"})
    assert "models" in (await problem(response, 400))["errors"]


# --- read ---------------------------------------------------------------------------------------


async def test_get_returns_the_job(client: Client, repo: FakeRepository) -> None:
    job = stored(repo, succeeded_job())
    response = await client.get(f"{EXPORTS_A}/{job.job_id}", headers=auth())
    assert response.status == 200
    doc = await response.json()
    assert doc["jobId"] == str(job.job_id)
    assert doc["checksum"] == job.checksum
    assert schema_errors(doc, SCHEMAS["ExportJob"]) == []


async def test_unknown_job_is_404(client: Client) -> None:
    doc = await problem(await client.get(f"{EXPORTS_A}/{uuid.uuid4()}", headers=auth()), 404)
    assert doc["type"] == PROBLEM_TYPE_BASE + "not-found"


async def test_another_orgs_job_is_404_even_with_access_to_both(client: Client, repo: FakeRepository) -> None:
    job = stored(repo, make_job(org_id=ORG_B))
    both = token(orgs=(ORG_A, ORG_B))
    await problem(await client.get(f"{EXPORTS_A}/{job.job_id}", headers=auth(both)), 404)


# --- download -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED])
async def test_download_of_an_unfinished_job_is_409(
    client: Client, repo: FakeRepository, status: JobStatus
) -> None:
    job = stored(repo, make_job(status=status))
    response = await client.get(f"{EXPORTS_A}/{job.job_id}/download", headers=auth(), allow_redirects=False)
    await problem(response, 409)


@pytest.mark.parametrize(
    "job",
    [
        succeeded_job(expires_in=-timedelta(days=1), status=JobStatus.EXPIRED),
        succeeded_job(expires_in=-timedelta(minutes=5)),
    ],
)
async def test_download_of_an_expired_job_is_410(client: Client, repo: FakeRepository, job: Job) -> None:
    stored(repo, job)
    response = await client.get(f"{EXPORTS_A}/{job.job_id}/download", headers=auth(), allow_redirects=False)
    doc = await problem(response, 410)
    assert doc["type"] == PROBLEM_TYPE_BASE + "gone"


async def test_download_redirects_to_a_presigned_url(
    client: Client, repo: FakeRepository, s3: FakeS3
) -> None:
    job = stored(repo, succeeded_job(expires_in=timedelta(hours=3)))
    response = await client.get(f"{EXPORTS_A}/{job.job_id}/download", headers=auth(), allow_redirects=False)
    assert response.status == 302
    assert response.headers["Cache-Control"] == "no-store"
    [presign] = s3.called("generate_presigned_url")
    assert response.headers["Location"] == (
        f"https://s3.example.test/analytics-exports/analytics/exports/{ORG_A}/{job.job_id}.csv"
        f"?X-Amz-Expires={presign['ExpiresIn']}"
    )
    assert presign["ExpiresIn"] <= 3 * 3600


async def test_download_needs_the_read_scope(client: Client, repo: FakeRepository) -> None:
    job = stored(repo, succeeded_job())
    response = await client.get(
        f"{EXPORTS_A}/{job.job_id}/download", headers=auth(token(scopes=(WRITE,))), allow_redirects=False
    )
    await problem(response, 403)


# --- manifest -----------------------------------------------------------------------------------


async def test_the_manifest_of_a_succeeded_export_is_served_byte_for_byte(
    client: Client, repo: FakeRepository
) -> None:
    job = stored(repo, succeeded_job())
    repo.manifests[job.job_id] = b'{\n  "manifestVersion": 1\n}\n'
    response = await client.get(f"{EXPORTS_A}/{job.job_id}/manifest", headers=auth())
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.read() == repo.manifests[job.job_id]
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "status",
    [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED],
)
async def test_an_export_that_has_not_succeeded_has_no_manifest(
    client: Client, repo: FakeRepository, status: JobStatus
) -> None:
    job = stored(repo, make_job(status=status))
    doc = await problem(await client.get(f"{EXPORTS_A}/{job.job_id}/manifest", headers=auth()), 409)
    assert f"is {status.value}" in doc["detail"]


async def test_an_export_that_succeeded_before_manifests_says_so(
    client: Client, repo: FakeRepository
) -> None:
    job = stored(repo, succeeded_job())
    doc = await problem(await client.get(f"{EXPORTS_A}/{job.job_id}/manifest", headers=auth()), 409)
    assert "before exports had manifests" in doc["detail"]


async def test_the_manifest_of_another_orgs_export_is_a_404(client: Client, repo: FakeRepository) -> None:
    job = stored(repo, succeeded_job(org_id=ORG_B))
    repo.manifests[job.job_id] = b"{}"
    await problem(await client.get(f"{EXPORTS_A}/{job.job_id}/manifest", headers=auth()), 404)
    write_only = auth(token(scopes=(WRITE,)))
    own = stored(repo, succeeded_job())
    await problem(await client.get(f"{EXPORTS_A}/{own.job_id}/manifest", headers=write_only), 403)


# --- list ---------------------------------------------------------------------------------------


def org_a_jobs(repo: FakeRepository, count: int) -> list[Job]:
    """``count`` jobs of org A (some sharing an initiated_at) plus one of org B."""
    base = datetime(2026, 11, 8, tzinfo=UTC)
    jobs = [
        stored(repo, make_job(initiated_at=base - timedelta(minutes=i // 2), status=JobStatus.PENDING))
        for i in range(count)
    ]
    stored(repo, make_job(org_id=ORG_B))
    return jobs


async def test_list_pages_return_every_job_once_newest_first(client: Client, repo: FakeRepository) -> None:
    # Given 11 jobs, pairs of which were initiated at the same instant
    jobs = org_a_jobs(repo, 11)
    # When every page of 3 is fetched by following nextCursor
    seen: list[str] = []
    pages = 0
    params: dict[str, str] = {"limit": "3"}
    while True:
        response = await client.get(EXPORTS_A, params=params, headers=auth())
        assert response.status == 200, await response.text()
        doc = await response.json()
        assert schema_errors(doc, SCHEMAS["ExportJobPage"]) == []
        assert len(doc["items"]) <= 3
        seen += [item["jobId"] for item in doc["items"]]
        pages += 1
        if doc["nextCursor"] is None:
            break
        params = {"limit": "3", "cursor": doc["nextCursor"]}
    # Then each of org A's jobs came exactly once, newest first, and no other org's job
    expected = sorted(jobs, key=lambda j: (j.initiated_at, j.job_id), reverse=True)
    assert seen == [str(j.job_id) for j in expected]
    assert pages == 4


async def test_list_default_limit_and_status_filter(client: Client, repo: FakeRepository) -> None:
    org_a_jobs(repo, 3)
    failed = stored(repo, make_job(status=JobStatus.FAILED, error_message="boom"))
    response = await client.get(EXPORTS_A, params={"status": "failed"}, headers=auth())
    doc = await response.json()
    assert [item["jobId"] for item in doc["items"]] == [str(failed.job_id)]
    assert doc["nextCursor"] is None
    [(_, _, limit, _)] = repo.called("list_page")
    assert limit == 50


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("not a cursor!", id="not-base64"),
        pytest.param(b64(b"hello"), id="not-json"),
        pytest.param(b64(b"[]"), id="json-array"),
        pytest.param(b64(b'{"t": "2026-11-08T00:00:00+00:00"}'), id="no-id"),
        pytest.param(b64(b'{"t": "yesterday", "id": "0b6f3c2e-8f57-4a4e-9d1c-3a1f4f0e9a01"}'), id="bad-time"),
        pytest.param(b64(b'{"t": "2026-11-08T00:00:00+00:00", "id": "nope"}'), id="bad-id"),
        pytest.param(b64(b'{"t": "2026-11-08T00:00:00+00:00", "id": 5}'), id="numeric-id"),
        # Forged times a cursor of ours never holds (year 1 with an offset was once a 500)
        pytest.param(b64(f'{{"t": "0001-01-01T00:00:00+14:00", "id": "{ORG_A}"}}'.encode()), id="year-1"),
        pytest.param(b64(f'{{"t": "9999-12-31T23:59:59-14:00", "id": "{ORG_A}"}}'.encode()), id="year-9999"),
        pytest.param(b64(f'{{"t": "2026-11-08T00:00:00", "id": "{ORG_A}"}}'.encode()), id="no-offset"),
        pytest.param(b64(f'{{"t": "2026-11-08T00:00:00+00:00\\n", "id": "{ORG_A}"}}'.encode()), id="newline"),
        pytest.param(
            b64(f'{{"t": "2026-11-08T00:00:00+00:00", "id": "{ORG_A}", "x": 1}}'.encode()), id="extra-key"
        ),
    ],
)
async def test_invalid_cursor_is_400(client: Client, repo: FakeRepository, cursor: str) -> None:
    org_a_jobs(repo, 2)
    doc = await problem(await client.get(EXPORTS_A, params={"cursor": cursor}, headers=auth()), 400)
    assert "cursor" in doc["errors"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"status": "done"}, "status"),
        ({"page": "2"}, "page"),
    ],
)
async def test_invalid_list_query_is_400(client: Client, params: dict[str, str], field: str) -> None:
    doc = await problem(await client.get(EXPORTS_A, params=params, headers=auth()), 400)
    assert field in doc["errors"]


# --- errors, health, misc -----------------------------------------------------------------------


async def test_unexpected_exception_is_a_500_problem_without_the_message(
    client: Client, repo: FakeRepository
) -> None:
    repo.get_error = RuntimeError("password=hunter2 host=db.internal")
    response = await client.get(f"{EXPORTS_A}/{uuid.uuid4()}", headers=auth())
    doc = await problem(response, 500)
    text = orjson.dumps(doc).decode()
    assert "hunter2" not in text
    assert "RuntimeError" not in text
    assert doc["type"] == PROBLEM_TYPE_BASE + "internal-error"


async def test_database_unavailable_is_503_with_a_retry_after(client: Client, repo: FakeRepository) -> None:
    repo.get_error = DatabaseUnavailable("PostgreSQL is unavailable")
    response = await client.get(f"{EXPORTS_A}/{uuid.uuid4()}", headers=auth())
    await problem(response, 503)
    assert response.headers["Retry-After"] == "5"


async def test_a_client_error_has_no_retry_after(client: Client) -> None:
    response = await client.get(f"{EXPORTS_A}/not-a-uuid", headers=auth())
    await problem(response, 400)
    assert "Retry-After" not in response.headers


async def test_unknown_route_is_a_404_problem(client: Client) -> None:
    await problem(await client.get(f"{BASE}/nothing-here", headers=auth()), 404)


async def test_wrong_method_is_a_405_problem_with_allow(client: Client) -> None:
    response = await client.delete(EXPORTS_A, headers=auth())
    await problem(response, 405)
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["Allow"].split(",")}


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_ready(client: Client, s3: FakeS3) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    doc = await response.json()
    assert doc == {
        "status": "ready",
        "checks": {"database": "ok", "rollups": "ok", "broker": "ok", "bucket:analytics-exports": "ok"},
    }
    assert s3.called("head_bucket") == [{"Bucket": "analytics-exports"}]


async def test_readyz_is_degraded_and_names_what_the_rollup_tables_lack(
    client: Client, repo: FakeRepository
) -> None:
    # Reads still work; exports would fail: degraded, the missing column named for operators
    repo.rollup_table_problems = ["analytics.hourly_rollups has no column currency (character(3))"]
    response = await client.get("/readyz")
    assert response.status == 200
    doc = await response.json()
    assert doc["status"] == "degraded"
    assert doc["checks"]["rollups"] == "error: analytics.hourly_rollups has no column currency (character(3))"


async def test_readyz_is_degraded_not_unready_when_the_broker_is_down(
    client: Client, queue: FakeQueue
) -> None:
    # The API still accepts exports (the sweep publishes them later): it stays in rotation
    queue.ping_error = QueueUnavailable("RabbitMQ connection failed")
    response = await client.get("/readyz")
    assert response.status == 200
    doc = await response.json()
    assert doc["status"] == "degraded"
    assert doc["checks"]["broker"].startswith("error:")
    assert doc["checks"]["database"] == "ok"


async def test_readyz_is_degraded_when_a_bucket_is_missing(client: Client, s3: FakeS3) -> None:
    s3.errors["head_bucket"] = client_error("NoSuchBucket", 404, "HeadBucket")
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["status"] == "degraded"


async def test_readyz_is_unavailable_only_without_the_database(client: Client, repo: FakeRepository) -> None:
    repo.ping_error = DatabaseUnavailable("PostgreSQL is unavailable: connection refused")
    response = await client.get("/readyz")
    assert response.status == 503
    doc = await response.json()
    assert doc["status"] == "unavailable"
    assert doc["checks"]["database"].startswith("error: PostgreSQL is unavailable")


async def test_openapi_document_is_served(client: Client) -> None:
    response = await client.get(f"{BASE}/openapi.json")
    assert response.status == 200
    doc = await response.json()
    assert doc["components"]["schemas"]["ExportJob"]["required"] == SCHEMAS["ExportJob"]["required"]


async def test_a_start_before_the_retention_window_is_a_400_naming_the_field(client: Client) -> None:
    body = {**BODY, "timeRange": {"start": "2000-01-01T00:00:00Z", "end": "2000-01-02T00:00:00Z"}}
    response = await client.post(EXPORTS_A, json=body, headers=auth())
    doc = await problem(response, 400)
    assert "timeRange.start" in doc["errors"]
    assert "retention" in doc["detail"]


async def test_each_download_is_recorded_in_the_audit_trail_with_who_and_from_where(
    client: Client, repo: FakeRepository
) -> None:
    job = stored(repo, succeeded_job())
    url = f"{EXPORTS_A}/{job.job_id}/download"
    for _ in range(2):
        response = await client.get(
            url, headers={**auth(), "User-Agent": "finance-laptop/1.0"}, allow_redirects=False
        )
        assert response.status == 302
    events = await client.get(f"{EXPORTS_A}/{job.job_id}/events", headers=auth())
    assert events.status == 200
    items = (await events.json())["items"]
    assert [(e["event"], e["actor"], e["userAgent"]) for e in items] == [
        ("download_url_issued", "alice@example.com", "finance-laptop/1.0")
    ] * 2
    assert all(e["clientIp"] == "127.0.0.1" for e in items)


async def test_events_are_paged_oldest_first(client: Client, repo: FakeRepository) -> None:
    # Given a job with five links issued (the fake records each)
    job = stored(repo, succeeded_job())
    for _ in range(5):
        response = await client.get(
            f"{EXPORTS_A}/{job.job_id}/download", headers=auth(), allow_redirects=False
        )
        assert response.status == 302
    # When its trail is read two at a time, then every event comes once, in order, on three pages
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"{EXPORTS_A}/{job.job_id}/events", params=params, headers=auth())
        assert response.status == 200, await response.text()
        doc = await response.json()
        assert schema_errors(doc, SCHEMAS["ExportEventList"]) == []
        seen.extend(e["eventId"] for e in doc["items"])
        pages += 1
        if (cursor := doc["nextCursor"]) is None:
            break
    assert (seen, pages) == ([1, 2, 3, 4, 5], 3)


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "cursor=", "cursor=bm9wZQ", "status=failed", "limit=1&limit=2"]
)
async def test_bad_events_paging_is_a_400(client: Client, repo: FakeRepository, query: str) -> None:
    job = stored(repo, succeeded_job())
    await problem(await client.get(f"{EXPORTS_A}/{job.job_id}/events?{query}", headers=auth()), 400)


async def test_answers_with_job_or_audit_data_are_never_cached(client: Client, repo: FakeRepository) -> None:
    job = stored(repo, succeeded_job())
    for path in (
        EXPORTS_A,
        f"{EXPORTS_A}/{job.job_id}",
        f"{EXPORTS_A}/{job.job_id}/events",
        f"{EXPORTS_A}/x",
    ):
        response = await client.get(path, headers=auth())
        assert response.headers["Cache-Control"] == "no-store", path
    response = await client.post(EXPORTS_A, json=BODY, headers=auth())
    assert (response.status, response.headers["Cache-Control"]) == (202, "no-store")


async def test_events_of_another_orgs_job_are_a_404(client: Client, repo: FakeRepository) -> None:
    job = stored(repo, succeeded_job(org_id=ORG_B))
    response = await client.get(f"{EXPORTS_A}/{job.job_id}/events", headers=auth())
    await problem(response, 404)


async def test_the_per_org_limit_is_a_429_with_retry_after(
    aiohttp_client: Any, settings: Settings, repo: FakeRepository, s3: FakeS3, queue: FakeQueue
) -> None:
    app = wired_app(settings, queue)
    store = ObjectStore(s3, settings.export_part_size)
    app[keys.EXPORTS] = ExportService(cast(JobRepository, repo), store, queue, max_active_per_org=2)
    client = await aiohttp_client(app)
    assert (await client.post(EXPORTS_A, json=BODY, headers=auth())).status == 202
    # The service asks the repository to keep the limit (its SQL: tests/integration) ...
    [(_, max_active)] = repo.called("create")
    assert max_active == 2
    # ... and when the repository refuses, the client gets 429 and when to try again
    repo.create_refused = TooManyActiveExports("this org has 2 exports pending or running", retry_after=30)
    refused = await client.post(EXPORTS_A, json=BODY, headers=auth())
    doc = await problem(refused, 429)
    assert doc["type"].endswith("/too-many-active-exports")
    assert refused.headers["Retry-After"] == "30"
    assert queue.enqueued == [next(iter(repo.jobs))]


async def test_an_idempotent_replay_is_the_same_job_and_says_so(client: Client, queue: FakeQueue) -> None:
    headers = {**auth(), "Idempotency-Key": "month-end-2026-11"}
    first = await client.post(EXPORTS_A, json=BODY, headers=headers)
    again = await client.post(EXPORTS_A, json=BODY, headers=headers)
    assert (first.status, again.status) == (202, 202)
    assert (await first.json())["jobId"] == (await again.json())["jobId"]
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(queue.enqueued) == 1
    other = await client.post(EXPORTS_A, json={**BODY, "granularity": "hourly"}, headers=headers)
    doc = await problem(other, 422)
    assert doc["type"].endswith("/idempotency-key-reused")


async def test_a_zone_that_cannot_bucket_hours_is_a_400_naming_the_time_zone(client: Client) -> None:
    for zone in ("Asia/Kolkata", "No/Such_Zone"):
        response = await client.post(EXPORTS_A, json={**BODY, "timeZone": zone}, headers=auth())
        doc = await problem(response, 400)
        assert "timeZone" in doc["errors"], doc


async def test_the_job_echoes_its_time_zone(client: Client) -> None:
    response = await client.post(EXPORTS_A, json={**BODY, "timeZone": "Europe/Berlin"}, headers=auth())
    assert response.status == 202
    assert (await response.json())["timeZone"] == "Europe/Berlin"


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "ünïcode"])
async def test_a_malformed_idempotency_key_is_a_400(client: Client, key: str) -> None:
    response = await client.post(EXPORTS_A, json=BODY, headers={**auth(), "Idempotency-Key": key})
    doc = await problem(response, 400)
    assert "Idempotency-Key" in doc["errors"]


async def test_cancel_of_a_pending_export_is_immediate(client: Client, repo: FakeRepository) -> None:
    job = stored(repo, make_job())
    response = await client.post(f"{EXPORTS_A}/{job.job_id}/cancel", headers=auth())
    assert response.status == 202
    body = await response.json()
    assert body["status"] == "cancelled"
    assert body["cancelRequestedAt"] is not None


async def test_cancel_of_a_running_export_asks_it_to_stop(client: Client, repo: FakeRepository) -> None:
    job = stored(repo, make_job(status=JobStatus.RUNNING, attempt=1))
    body = await (await client.post(f"{EXPORTS_A}/{job.job_id}/cancel", headers=auth())).json()
    assert (body["status"], body["cancelRequestedAt"] is not None) == ("running", True)


async def test_cancel_of_a_finished_export_is_a_409(client: Client, repo: FakeRepository) -> None:
    job = stored(repo, succeeded_job())
    await problem(await client.post(f"{EXPORTS_A}/{job.job_id}/cancel", headers=auth()), 409)


async def test_cancel_needs_the_write_scope_and_the_org(client: Client, repo: FakeRepository) -> None:
    job = stored(repo, make_job())
    read_only = auth(token(scopes=(READ,)))
    await problem(await client.post(f"{EXPORTS_A}/{job.job_id}/cancel", headers=read_only), 403)
    theirs = stored(repo, make_job(org_id=ORG_B))
    await problem(await client.post(f"{EXPORTS_A}/{theirs.job_id}/cancel", headers=auth()), 404)
    assert repo.jobs[theirs.job_id].status is JobStatus.PENDING


@pytest.mark.parametrize(
    "query", ["status=", "limit=", "cursor=", "status=failed&status=pending", "limit=5&limit=6"]
)
async def test_empty_or_repeated_list_parameters_are_a_400(client: Client, query: str) -> None:
    await problem(await client.get(f"{EXPORTS_A}?{query}", headers=auth()), 400)


async def test_a_scrape_reads_each_dependency_once_and_reports_it(
    client: Client, queue: FakeQueue, repo: FakeRepository, s3: FakeS3
) -> None:
    # Given the broker answers nothing (its queue depths cannot be read)
    queue.queue_depths = QueueUnavailable("RabbitMQ connection failed")
    queue.ping_error = AssertionError("a scrape must not ping what the backlog already read")
    repo.ping_error = AssertionError("a scrape must not ping what the backlog already read")
    # When Prometheus scrapes
    text = await (await client.get("/metrics")).text()
    # Then the broker is reported down and the rest up, each read once (the buckets by HEAD)
    assert 'exports_dependency_up{dependency="broker"} 0.0' in text
    assert 'exports_dependency_up{dependency="database"} 1.0' in text
    assert 'exports_dependency_up{dependency="bucket:analytics-exports"} 1.0' in text
    assert s3.called("head_bucket") == [{"Bucket": "analytics-exports"}]
