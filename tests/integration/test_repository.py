"""The job repository against a real PostgreSQL: compare-and-set transitions and paging."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest

from service.errors import IdempotencyKeyReused, TooManyActiveExports, ValidationFailed
from service.job import (
    Caller,
    Event,
    ExportOutput,
    ExportRequest,
    Granularity,
    IdempotencyKey,
    JobStatus,
    Lease,
)
from service.repository import JobRepository, create_pool
from service.rollups import DEFAULT_TABLES
from service.settings import Settings

pytestmark = pytest.mark.usefixtures("clean_state")
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 10, 31, tzinfo=UTC)


@pytest.fixture
async def repository(settings: Settings) -> AsyncIterator[JobRepository]:
    pool = await create_pool(settings.database_url, max_size=5)
    yield JobRepository(pool, tables=DEFAULT_TABLES)
    await pool.close()


def request(org_id: uuid.UUID, models: tuple[str, ...] | None = None) -> ExportRequest:
    return ExportRequest(org_id, "finance@example.com", START, END, Granularity.DAILY, models)


def output(job_id: uuid.UUID) -> ExportOutput:
    manifest = b'{"manifestVersion": 1}\n'
    return ExportOutput(
        f"s3://b/{job_id}.csv", "a" * 64, 3, 100, manifest, hashlib.sha256(manifest).hexdigest()
    )


async def test_create_then_get_round_trips_every_field(repository: JobRepository) -> None:
    org = uuid.uuid4()
    created = (await repository.create(request(org, ("m1", "m2")))).job
    fetched = await repository.get(org, created.job_id)
    assert fetched == created
    assert created.status is JobStatus.PENDING
    assert created.models == ("m1", "m2")
    assert (created.time_range_start, created.time_range_end) == (START, END)
    assert await repository.get(uuid.uuid4(), created.job_id) is None  # another org's view


async def test_claim_is_compare_and_set_under_concurrency(repository: JobRepository) -> None:
    job = (await repository.create(request(uuid.uuid4()))).job
    claims = await asyncio.gather(*(repository.claim(job.job_id, 60, "test-worker:1") for _ in range(8)))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    assert winners[0].status is JobStatus.RUNNING
    assert winners[0].attempt == 1


async def test_writes_are_fenced_by_the_attempt(repository: JobRepository) -> None:
    job = (await repository.create(request(uuid.uuid4()))).job
    claimed = await repository.claim(job.job_id, 60, "test-worker:1")
    assert claimed is not None
    stale = replace(claimed, attempt=0)
    assert await repository.complete(stale, output(job.job_id), 60) is None
    assert await repository.fail(stale, "late") is None
    done = await repository.complete(claimed, output(job.job_id), 60)
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    assert done.expires_at is not None
    assert done.completed_at is not None
    assert 59 <= (done.expires_at - done.completed_at).total_seconds() <= 61


async def test_nothing_moves_a_finished_job_back(repository: JobRepository) -> None:
    job = (await repository.create(request(uuid.uuid4()))).job
    claimed = await repository.claim(job.job_id, 60, "test-worker:1")
    assert claimed is not None
    assert await repository.fail(claimed, "boom") is not None
    assert await repository.claim(job.job_id, 60, "test-worker:1") is None
    assert await repository.complete(claimed, output(job.job_id), 60) is None
    assert await repository.expire(job.job_id) is None  # only succeeded jobs expire
    final = await repository.get(job.org_id, job.job_id)
    assert final is not None
    assert final.status is JobStatus.FAILED
    assert final.error_message == "boom"


async def test_a_succeeded_job_cannot_be_recorded_without_its_output(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                """INSERT INTO analytics.export_jobs (job_id, org_id, requested_by, time_range_start,
                   time_range_end, granularity, status) VALUES ($1, $2, 'x', $3, $4, 'daily', 'succeeded')""",
                uuid.uuid4(),
                uuid.uuid4(),
                START,
                END,
            )
    finally:
        await conn.close()


async def test_paging_returns_every_job_once_newest_first(repository: JobRepository) -> None:
    org = uuid.uuid4()
    created = [(await repository.create(request(org))).job for _ in range(7)]
    await repository.create(request(uuid.uuid4()))  # another org's job never shows up
    seen, cursor = [], None
    while True:
        page = await repository.list_page(org, status=None, limit=3, cursor=cursor)
        seen.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [j.job_id for j in seen] == [j.job_id for j in reversed(created)]
    assert [j.initiated_at for j in seen] == sorted((j.initiated_at for j in seen), reverse=True)


@pytest.mark.parametrize(
    "when",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+00:00\n"],
)
async def test_a_forged_cursor_is_a_validation_error_not_a_database_error(
    repository: JobRepository, when: str
) -> None:
    # Given a cursor made by hand around a time at the edge of what a datetime can hold
    raw = orjson.dumps({"t": when, "id": str(uuid.uuid4())})
    forged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    # When a page is asked for with it, then it is refused as input, before any query
    with pytest.raises(ValidationFailed):
        await repository.list_page(uuid.uuid4(), status=None, limit=3, cursor=forged)


async def test_cursors_at_the_edges_of_time_still_page(repository: JobRepository) -> None:
    # The oldest and newest times a cursor of ours can hold reach PostgreSQL without overflow
    for when in ("0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59.999999+00:00"):
        raw = orjson.dumps({"t": when, "id": str(uuid.uuid4())})
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        page = await repository.list_page(uuid.uuid4(), status=None, limit=3, cursor=cursor)
        assert page.items == ()


async def test_status_filter(repository: JobRepository) -> None:
    org = uuid.uuid4()
    first = (await repository.create(request(org))).job
    await repository.create(request(org))
    assert await repository.claim(first.job_id, 60, "test-worker:1") is not None
    running = await repository.list_page(org, status=JobStatus.RUNNING, limit=10, cursor=None)
    pending = await repository.list_page(org, status=JobStatus.PENDING, limit=10, cursor=None)
    assert [j.job_id for j in running.items] == [first.job_id]
    assert len(pending.items) == 1
    assert pending.items[0].job_id != first.job_id


async def test_stale_pending_finds_unpublished_jobs(repository: JobRepository, settings: Settings) -> None:
    unpublished = (await repository.create(request(uuid.uuid4()))).job
    published = (await repository.create(request(uuid.uuid4()))).job
    await repository.mark_enqueued(published.job_id)
    assert await repository.stale_pending(0, 3600, 10) == [unpublished.job_id]
    assert await repository.stale_pending(3600, 3600, 10) == []


async def lapse(settings: Settings, job_id: uuid.UUID) -> None:
    """Move a running job's lease into the past, as if its worker died a while ago."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "UPDATE analytics.export_jobs SET lease_expires_at = now() - interval '1 second'"
            " WHERE job_id = $1",
            job_id,
        )
    finally:
        await conn.close()


async def test_lease_renewal_is_fenced(repository: JobRepository) -> None:
    job = (await repository.create(request(uuid.uuid4()))).job
    claimed = await repository.claim(job.job_id, 60, "w:1")
    assert claimed is not None
    assert claimed.claimed_by == "w:1"
    assert claimed.lease_expires_at is not None
    assert await repository.renew_lease(claimed, 60) is Lease.HELD
    assert await repository.renew_lease(replace(claimed, attempt=claimed.attempt + 1), 60) is Lease.LOST


async def test_retry_backoff_keeps_the_job_unclaimable_until_due(repository: JobRepository) -> None:
    job = (await repository.create(request(uuid.uuid4()))).job
    claimed = await repository.claim(job.job_id, 60, "w:1")
    assert claimed is not None
    retried = await repository.retry(claimed, "attempt 1 failed: boom", backoff_seconds=3600)
    assert retried is not None
    assert retried.status is JobStatus.PENDING
    assert retried.error_message == "attempt 1 failed: boom"
    assert await repository.claim(job.job_id, 60, "w:2") is None  # still backing off
    assert await repository.stale_pending(0, 3600, 10) == []  # and the sweep does not publish it yet
    now = await repository.retry(claimed, "late", 0)
    assert now is None  # the attempt no longer owns the job


async def test_hand_back_does_not_charge_an_attempt(repository: JobRepository) -> None:
    job = (await repository.create(request(uuid.uuid4()))).job
    first = await repository.claim(job.job_id, 60, "w:1")
    assert first is not None
    handed = await repository.hand_back(first)
    assert handed is not None
    assert (handed.status, handed.attempt, handed.handbacks, handed.charged_attempts) == (
        JobStatus.PENDING,
        1,
        1,
        0,
    )
    second = await repository.claim(job.job_id, 60, "w:2")
    assert second is not None
    assert (second.attempt, second.charged_attempts) == (2, 1)


async def test_lapsed_leases_are_requeued_then_failed_after_max_attempts(
    repository: JobRepository, settings: Settings
) -> None:
    job = (await repository.create(request(uuid.uuid4()))).job
    for attempt in (1, 2):
        claimed = await repository.claim(job.job_id, 60, f"w:{attempt}")
        assert claimed is not None
        assert await repository.set_upload_id(claimed, f"upload-{attempt}")
        await lapse(settings, job.job_id)
        assert await repository.requeue_lapsed(max_attempts=2, limit=10) == (
            [job.job_id] if attempt == 1 else []
        )
    # The second lapse used up both attempts: the job fails for good, its upload left for cleanup
    failed = await repository.fail_lapsed(max_attempts=2, limit=10)
    assert [j.job_id for j in failed] == [job.job_id]
    assert failed[0].status is JobStatus.FAILED
    assert failed[0].error_message is not None
    assert failed[0].error_message.startswith("gave up after 2 attempts")
    assert [j.job_id for j in await repository.leftover_uploads(10)] == [job.job_id]
    await repository.clear_upload_id(job.job_id, "upload-2")
    assert await repository.leftover_uploads(10) == []


async def test_a_live_lease_is_never_reclaimed(repository: JobRepository) -> None:
    job = (await repository.create(request(uuid.uuid4()))).job
    assert await repository.claim(job.job_id, 60, "w:1") is not None
    assert await repository.requeue_lapsed(max_attempts=3, limit=10) == []
    assert await repository.fail_lapsed(max_attempts=3, limit=10) == []


async def test_every_transition_leaves_an_event_and_events_are_append_only(
    repository: JobRepository, settings: Settings
) -> None:
    # Given a job created by a caller, claimed, retried, claimed again and completed
    org = uuid.uuid4()
    caller = Caller("finance@example.com", "203.0.113.7", "curl/8.0")
    job = (await repository.create(request(org), caller)).job
    first = await repository.claim(job.job_id, 60, "w:1")
    assert first is not None
    assert await repository.retry(first, "attempt 1 failed: reset", 0) is not None
    second = await repository.claim(job.job_id, 60, "w:2")
    assert second is not None
    done = await repository.complete(second, output(job.job_id), 60)
    assert done is not None
    await repository.record_download(done, caller, 59, window_seconds=900)
    # Then the trail tells the whole story, in order, with who did what
    events = await all_events(repository, org, job.job_id)
    assert [(e.event, e.actor, e.attempt) for e in events] == [
        ("created", "finance@example.com", 0),
        ("started", "w:1", 1),
        ("retried", "w:1", 1),
        ("started", "w:2", 2),
        ("succeeded", "w:2", 2),
        ("download_url_issued", "finance@example.com", 2),
    ]
    assert (events[0].client_ip, events[0].user_agent) == ("203.0.113.7", "curl/8.0")
    assert events[2].details["reason"] == "attempt 1 failed: reset"
    assert events[4].details["checksum"] == "a" * 64
    assert (
        events[4].details["manifestChecksum"]
        == done.manifest_checksum
        == output(job.job_id).manifest_checksum
    )
    assert (events[0].details["format"], events[0].details["schema"]) == ("csv", "native")
    # And the manifest is kept, byte for byte
    assert await repository.get_manifest(org, job.job_id) == (done, output(job.job_id).manifest)
    assert await all_events(repository, uuid.uuid4(), job.job_id) == []  # another org sees nothing
    # And the trail cannot be rewritten: no field of any event, not even a download count going back
    conn = await asyncpg.connect(settings.database_url)
    try:
        for statement in (
            "UPDATE analytics.export_events SET actor = 'mallory'",
            "UPDATE analytics.export_events SET details = details || '{\"count\": 0}'"
            " WHERE event = 'download_url_issued'",
            "UPDATE analytics.export_events SET occurred_at = now(), details = details || '{\"count\": 9}'"
            " WHERE event = 'download_url_issued'",
            "UPDATE analytics.export_events SET details = '{\"count\": 9}'"
            " WHERE event = 'download_url_issued'",
            "DELETE FROM analytics.export_events",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()


async def all_events(repository: JobRepository, org: uuid.UUID, job_id: uuid.UUID) -> list[Event]:
    """Every page of the job's trail, in order."""
    events: list[Event] = []
    cursor = None
    while True:
        page = await repository.events(org, job_id, limit=2, cursor=cursor)
        events.extend(page.items)
        if (cursor := page.next_cursor) is None:
            return events


async def test_links_issued_again_to_one_caller_are_counted_in_one_event(
    repository: JobRepository, settings: Settings
) -> None:
    # Given a succeeded export
    org = uuid.uuid4()
    job = (await repository.create(request(org))).job
    claimed = await repository.claim(job.job_id, 60, "w:1")
    assert claimed is not None
    done = await repository.complete(claimed, output(job.job_id), 60)
    assert done is not None
    script = Caller("poller@example.com", "203.0.113.9", "cron/1")
    # When one caller asks for 300 links, 50 at a time concurrently, and another caller for one
    for _ in range(6):
        await asyncio.gather(
            *(repository.record_download(done, script, 59, window_seconds=900) for _ in range(50))
        )
    await repository.record_download(
        done, Caller("auditor@example.com", "198.51.100.2", "ui/1"), 59, window_seconds=900
    )
    # Then the trail holds one event per caller, the first with the exact count
    downloads = [e for e in await all_events(repository, org, job.job_id) if e.event == "download_url_issued"]
    assert [(e.actor, e.details["count"]) for e in downloads] == [
        ("poller@example.com", 300),
        ("auditor@example.com", 1),
    ]
    assert "lastIssuedAt" in downloads[0].details
    # And once the window has passed, a link starts a new event
    await repository.record_download(done, script, 59, window_seconds=0.001)
    downloads = [e for e in await all_events(repository, org, job.job_id) if e.event == "download_url_issued"]
    assert [(e.actor, e.details["count"]) for e in downloads][-1] == ("poller@example.com", 1)


@pytest.mark.parametrize("cursor", ["eyJlIjogMH0", "eyJlIjogdHJ1ZX0", "bm9wZQ", "eyJlIjogMSwgIngiOiAyfQ"])
async def test_a_forged_events_cursor_is_a_validation_error(repository: JobRepository, cursor: str) -> None:
    with pytest.raises(ValidationFailed):
        await repository.events(uuid.uuid4(), uuid.uuid4(), limit=5, cursor=cursor)


async def test_concurrent_creates_never_exceed_the_per_org_limit(repository: JobRepository) -> None:
    # Given 12 creates for one org racing each other, with at most 5 active jobs allowed
    org = uuid.uuid4()
    outcomes = await asyncio.gather(
        *(repository.create(request(org), max_active=5) for _ in range(12)), return_exceptions=True
    )
    # Then exactly 5 went through and the others were refused, never more
    assert sum(1 for o in outcomes if not isinstance(o, BaseException)) == 5
    assert all(isinstance(o, TooManyActiveExports) for o in outcomes if isinstance(o, BaseException))
    assert await repository.create(request(uuid.uuid4()), max_active=5)  # another org is not affected


async def test_concurrent_replays_of_one_idempotency_key_create_one_job(repository: JobRepository) -> None:
    org = uuid.uuid4()
    key = IdempotencyKey("client-key-1", "f" * 64)
    outcomes = await asyncio.gather(*(repository.create(request(org), idempotency=key) for _ in range(8)))
    assert len({o.job.job_id for o in outcomes}) == 1
    assert sum(o.new for o in outcomes) == 1
    with pytest.raises(IdempotencyKeyReused):
        await repository.create(request(org), idempotency=IdempotencyKey("client-key-1", "0" * 64))
    # The same key in another org is another key
    assert (await repository.create(request(uuid.uuid4()), idempotency=key)).new


async def test_an_idempotency_key_expires_after_24_hours(
    repository: JobRepository, settings: Settings
) -> None:
    org = uuid.uuid4()
    key = IdempotencyKey("old-key", "a" * 64)
    first = await repository.create(request(org), idempotency=key)
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("UPDATE analytics.export_idempotency SET created_at = now() - interval '25 hours'")
    finally:
        await conn.close()
    # A different body is no longer a conflict, and the key now names the new job
    again = await repository.create(request(org, ("m9",)), idempotency=IdempotencyKey("old-key", "b" * 64))
    assert again.new
    assert again.job.job_id != first.job.job_id


async def test_cancel_pending_at_once_running_on_request_finished_never(repository: JobRepository) -> None:
    org = uuid.uuid4()
    caller = Caller("controller@example.com", "198.51.100.4", "ui/2")
    pending = (await repository.create(request(org))).job
    cancelled = await repository.cancel(org, pending.job_id, caller)
    assert cancelled is not None
    assert cancelled.status is JobStatus.CANCELLED
    assert await repository.claim(pending.job_id, 60, "w:1") is None  # nothing left to run
    # A running job is only asked to stop; its attempt hears it at the next lease renewal
    running_job = (await repository.create(request(org))).job
    running = await repository.claim(running_job.job_id, 60, "w:1")
    assert running is not None
    asked = await repository.cancel(org, running.job_id, caller)
    assert asked is not None
    assert (asked.status, asked.cancel_requested_at is not None) == (JobStatus.RUNNING, True)
    assert await repository.renew_lease(running, 60) is Lease.CANCEL_REQUESTED
    stopped = await repository.cancel_running(running)
    assert stopped is not None
    assert stopped.status is JobStatus.CANCELLED
    # Finished jobs, another org's and unknown ones cannot be cancelled
    assert await repository.cancel(org, running.job_id, caller) is None
    assert await repository.cancel(uuid.uuid4(), pending.job_id, caller) is None
    # The trail names who asked, from where, for both; a pending job is cancelled by that caller
    events = await all_events(repository, org, pending.job_id)
    assert [(e.event, e.actor, e.client_ip, e.user_agent) for e in events][-2:] == [
        ("cancel_requested", "controller@example.com", "198.51.100.4", "ui/2"),
        ("cancelled", "controller@example.com", "198.51.100.4", "ui/2"),
    ]
    # and a running one by the worker that stopped, after the caller's request
    events = await all_events(repository, org, running.job_id)
    assert [(e.event, e.actor, e.client_ip, e.user_agent) for e in events][-2:] == [
        ("cancel_requested", "controller@example.com", "198.51.100.4", "ui/2"),
        ("cancelled", "w:1", None, None),
    ]
    assert events[-2].details == {"status": "running"}


async def test_a_lapsed_job_asked_to_cancel_is_cancelled_not_retried(
    repository: JobRepository, settings: Settings
) -> None:
    org = uuid.uuid4()
    job = (await repository.create(request(org))).job
    assert await repository.claim(job.job_id, 60, "w:1") is not None
    assert await repository.cancel(org, job.job_id, Caller("a", None, None)) is not None
    await lapse(settings, job.job_id)
    assert await repository.requeue_lapsed(max_attempts=3, limit=10) == []
    assert await repository.cancel_lapsed(limit=10) == [job.job_id]
    final = await repository.get(org, job.job_id)
    assert final is not None
    assert final.status is JobStatus.CANCELLED


async def test_a_pooled_connection_comes_back_without_the_last_users_transaction(settings: Settings) -> None:
    # Given a pool of one connection (released without asyncpg's reset query), whose last user
    # began a transaction by hand, set transaction-local caller facts, and let go mid-transaction
    pool = await create_pool(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("SELECT set_config('analytics.actor', 'mallory', true)")
        # When the next user takes the same connection
        async with pool.acquire() as conn:
            # Then it is outside any transaction and the caller facts are gone
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT current_setting('analytics.actor', true)") in (None, "")
    finally:
        await pool.close()


async def test_marking_a_job_enqueued_leaves_the_connection_committing_durably(settings: Settings) -> None:
    # Given a pending job on a pool of one connection
    pool = await create_pool(settings.database_url, max_size=1)
    try:
        repository = JobRepository(pool, tables=DEFAULT_TABLES)
        created = await repository.create(request(uuid.uuid4()))
        # When it is marked enqueued (that one statement commits without waiting for the flush)
        await repository.mark_enqueued(created.job.job_id)
        # Then the note is stored, and the connection's next transactions commit durably again
        async with pool.acquire() as conn:
            assert await conn.fetchval(
                "SELECT enqueued_at FROM analytics.export_jobs WHERE job_id = $1", created.job.job_id
            )
            assert await conn.fetchval("SELECT current_setting('synchronous_commit')") == "on"
    finally:
        await pool.close()


async def test_due_for_expiry_finds_succeeded_jobs_past_their_expiry_oldest_first(
    repository: JobRepository,
) -> None:
    # Given succeeded jobs whose downloads closed a minute and an hour ago, one still open, and a
    # running job
    org = uuid.uuid4()

    async def succeeded(ttl_seconds: float) -> uuid.UUID:
        job = (await repository.create(request(org))).job
        claimed = await repository.claim(job.job_id, 60, "w:1")
        assert claimed is not None
        assert await repository.complete(claimed, output(job.job_id), ttl_seconds) is not None
        return job.job_id

    minute_ago, hour_ago, open_still = await succeeded(-60), await succeeded(-3600), await succeeded(3600)
    running = (await repository.create(request(org))).job
    assert await repository.claim(running.job_id, 60, "w:1") is not None
    # When the expiry asks, then only the closed ones come, the oldest expiry first, within the limit
    due = [job.job_id for job in await repository.due_for_expiry(limit=100) if job.org_id == org]
    assert due == [hour_ago, minute_ago]
    assert len(await repository.due_for_expiry(limit=1)) == 1
    # And once expired, a job is no longer due, nor can it be expired twice
    assert await repository.expire(hour_ago) is not None
    assert await repository.expire(hour_ago) is None
    assert [j.job_id for j in await repository.due_for_expiry(limit=100) if j.org_id == org] == [minute_ago]
    # The orphan sweep's question: which of these jobs are still pending or running
    pending = (await repository.create(request(org))).job
    asked = [minute_ago, open_still, running.job_id, pending.job_id, uuid.uuid4()]
    assert await repository.unfinished_job_ids(asked) == {running.job_id, pending.job_id}
