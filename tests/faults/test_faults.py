"""Fault injection against the real processes: every job ends succeeded or failed with a reason,
with exactly one object whose checksum matches its bytes, and no multipart upload left behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
import uuid

import aiohttp
import asyncpg
import orjson

from actors.broker import create_broker
from actors.tasks import declare_actors
from service.storage import S3Client
from tests.e2e.test_observability import scrape, value
from tests.faults.conftest import (
    HOURLY_MONTH,
    Cluster,
    eventually_no_uploads,
    job_row,
    objects_of,
    post_export,
    read_key,
    read_object,
    seed_hours,
    wait_finished,
    wait_until,
    worker_pid,
)
from tests.support.rabbitmq import queue_types

#: Throttle S3 to this many bytes/s per connection so a 15 MiB export takes several seconds.
SLOW_S3 = 2 * 1024 * 1024


async def export_in_flight(
    cluster: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, *, models: int, rate: int = SLOW_S3
) -> tuple[uuid.UUID, uuid.UUID, asyncpg.Record]:
    """Seed ``models`` x 744 hourly rows for a new org, throttle S3 to ``rate`` bytes/s, request the
    month hourly, and return (org, job id, job row) once a worker streams it into an upload."""
    org = uuid.uuid4()
    await seed_hours(db, org, models=models)
    cluster.s3.set_rate(rate)
    job_id = await post_export(http, cluster, org)
    running = await wait_until(db, job_id, "status = 'running' AND upload_id IS NOT NULL", cluster)
    return org, job_id, running


async def assert_one_true_object(bucket: S3Client, org: uuid.UUID, job: asyncpg.Record) -> bytes:
    """Exactly one data file and its manifest for the job, and their bytes are what the job row
    vouches for."""
    key = f"analytics/exports/{org}/{job['job_id']}"
    assert await objects_of(bucket, org) == [f"{key}.csv", f"{key}.manifest.json"]
    data = await read_object(bucket, org, job["job_id"])
    assert hashlib.sha256(data).hexdigest() == job["checksum"]
    manifest = await read_key(bucket, f"{key}.manifest.json")
    assert hashlib.sha256(manifest).hexdigest() == job["manifest_checksum"]
    assert orjson.loads(manifest)["files"][0]["sha256"] == job["checksum"]
    assert len(data) == job["byte_count"]
    assert data.count(b"\n") == job["row_count"] + 1
    return data


async def test_worker_killed_mid_export_is_finished_by_another(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    # Given a large export streaming slowly enough to be caught in the middle
    org, job_id, running = await export_in_flight(healthy, http, db, models=200)
    # When its worker is killed with SIGKILL
    os.kill(worker_pid(running), signal.SIGKILL)
    healthy.s3.set_rate(None)
    # Then another worker reclaims it once the lease lapses and completes it
    done = await wait_finished(db, job_id, healthy)
    assert done["status"] == "succeeded", (done["error_message"], dict(done))
    assert done["attempt"] == 2
    assert done["claimed_by"] != running["claimed_by"]
    await assert_one_true_object(bucket, org, done)
    await eventually_no_uploads(bucket)


async def test_s3_unreachable_for_10_seconds_mid_upload_is_ridden_out(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    org, job_id, _ = await export_in_flight(healthy, http, db, models=100)
    # When S3 becomes unreachable for 10 s in the middle of the upload
    healthy.s3.cut()
    await asyncio.sleep(10)
    healthy.s3.restore()
    healthy.s3.set_rate(None)
    # Then the job still succeeds, in the same attempt (the part retries covered the outage)
    done = await wait_finished(db, job_id, healthy)
    assert done["status"] == "succeeded", (done["error_message"], dict(done))
    assert done["attempt"] == 1
    await assert_one_true_object(bucket, org, done)
    await eventually_no_uploads(bucket)


async def job_states_until_finished(
    http: aiohttp.ClientSession, cluster: Cluster, org: uuid.UUID, job_id: uuid.UUID
) -> list[dict[str, object]]:
    """Every distinct state the API showed for the job, polled every 0.1 s until it finished."""
    url = f"{cluster.base}/analytics/v1/orgs/{org}/exports/{job_id}"
    keys = ("status", "attempts", "nextAttemptAt", "errorMessage")
    states: list[dict[str, object]] = []
    while True:
        async with http.get(url, headers=cluster.auth(org)) as reply:
            assert reply.status == 200, await reply.text()
            job = await reply.json()
        state = {key: job[key] for key in keys}
        if not states or states[-1] != state:
            states.append(state)
        if job["status"] not in ("pending", "running"):
            return states
        await asyncio.sleep(0.1)


async def test_s3_unreachable_past_the_retry_budget_fails_readably_and_cleans_up(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    # Given S3 is down for good once the upload has started
    org, job_id, _ = await export_in_flight(healthy, http, db, models=20, rate=256 * 1024)
    _, _, dead_before = healthy.queue_counts()
    healthy.s3.cut()
    seen = asyncio.create_task(job_states_until_finished(http, healthy, org, job_id))
    # Then every attempt gives up after the retry window and the job fails with a readable reason
    failed = await wait_finished(db, job_id, healthy, seconds=150)
    assert failed["status"] == "failed"
    assert failed["error_message"].startswith("gave up after 3 attempts: S3 "), failed["error_message"]
    # And the API said so all along: between attempts the job was pending, with how many attempts
    # it had had, why the last failed and when the next would start
    states = await asyncio.wait_for(seen, 10)
    waiting = [state for state in states if state["status"] == "pending"]
    assert {state["attempts"] for state in waiting} == {1, 2}, states
    assert all(str(state["errorMessage"]).startswith("attempt ") for state in waiting), waiting
    assert all(state["nextAttemptAt"] is not None for state in waiting), waiting
    assert (states[-1]["status"], states[-1]["attempts"], states[-1]["nextAttemptAt"]) == ("failed", 3, None)
    # And once S3 is back, the sweep aborts what could not be aborted while it was down
    healthy.heal()
    await eventually_no_uploads(bucket)
    deadline = time.monotonic() + 30
    while (await job_row(db, job_id))["upload_id"] is not None:
        assert time.monotonic() < deadline, "the failed job's upload was never cleaned up"
        await asyncio.sleep(0.2)
    assert await objects_of(bucket, org) == []
    # And the outage put nothing in the dead-letter queue (the ticks handle S3 faults per item)
    assert healthy.queue_counts()[2] == dead_before, healthy.log_tail()


async def test_broker_unreachable_at_post_still_accepts_and_completes_later(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    org = uuid.uuid4()
    await seed_hours(db, org, models=5, hours=48)
    # Given RabbitMQ is unreachable for every process
    healthy.rabbit.cut()
    # When finance asks for an export
    job_id = await post_export(http, healthy, org)
    # Then the job is stored (pending, not published) and nothing is lost while the broker is away
    row = await job_row(db, job_id)
    assert (row["status"], row["enqueued_at"]) == ("pending", None)
    await asyncio.sleep(3)
    assert (await job_row(db, job_id))["status"] == "pending"
    # And once the broker is back the sweep publishes it and it completes
    healthy.rabbit.restore()
    done = await wait_finished(db, job_id, healthy, seconds=120)
    assert done["status"] == "succeeded", (done["error_message"], dict(done))
    await assert_one_true_object(bucket, org, done)


async def broker_read_errors(http: aiohttp.ClientSession, cluster: Cluster) -> float:
    """What the API's /metrics says now: scrapes that could not read the queue depths."""
    samples = await scrape(http, f"{cluster.base}/metrics")
    return value(samples, "exports_backlog_read_errors_total", source="broker")


async def test_readiness_is_degraded_without_the_broker_and_unavailable_without_the_database(
    healthy: Cluster, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{healthy.base}/readyz") as reply:
        assert reply.status == 200, await reply.text()
    missed = await broker_read_errors(http, healthy)
    # Given RabbitMQ is unreachable (the API's open connection reset, new ones refused)
    healthy.rabbit.cut()
    # Then the API stays ready (it still accepts exports), degraded, naming the broker, and a
    # scrape still answers, counting the miss
    async with http.get(f"{healthy.base}/readyz") as reply:
        body = await reply.json()
        assert reply.status == 200, body
    assert body["status"] == "degraded", body
    assert body["checks"]["broker"].startswith("error: RabbitMQ"), body
    assert body["checks"]["database"] == "ok", body
    assert await broker_read_errors(http, healthy) == missed + 1
    # And once it is back, both recover on a new connection
    healthy.rabbit.restore()
    async with http.get(f"{healthy.base}/readyz") as reply:
        assert (reply.status, (await reply.json())["status"]) == (200, "ready")
    assert await broker_read_errors(http, healthy) == missed + 1
    # While PostgreSQL is unreachable, the instance cannot serve requests: 503
    healthy.pg.cut()
    async with http.get(f"{healthy.base}/readyz") as reply:
        body = await reply.json()
        assert reply.status == 503, body
    assert body["status"] == "unavailable", body
    assert body["checks"]["database"].startswith("error:"), body
    healthy.pg.restore()
    async with http.get(f"{healthy.base}/readyz") as reply:
        assert reply.status == 200, await reply.text()


async def test_broker_connections_lost_mid_export_finish_the_job_once(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    # Given an export streaming slowly
    org, job_id, running = await export_in_flight(healthy, http, db, models=100)
    # When every connection to RabbitMQ drops, as in a broker restart, and stays away a few seconds
    # (the running message cannot be acknowledged: RabbitMQ will deliver it again)
    healthy.rabbit.cut()
    await asyncio.sleep(3)
    healthy.rabbit.restore()
    healthy.s3.set_rate(None)
    # Then the attempt under way finishes the job, and the redelivered message finds nothing to do
    done = await wait_finished(db, job_id, healthy)
    assert done["status"] == "succeeded", (done["error_message"], dict(done))
    assert (done["attempt"], done["claimed_by"]) == (1, running["claimed_by"])
    await assert_one_true_object(bucket, org, done)
    await eventually_no_uploads(bucket)
    # (RabbitMQ did deliver the unacknowledged message again, and a worker found nothing to claim)
    deadline = time.monotonic() + 30
    while not redelivered_and_not_claimable(healthy, job_id):
        assert time.monotonic() < deadline, healthy.log_tail()
        await asyncio.sleep(0.2)
    assert (await job_row(db, job_id))["attempt"] == 1
    # And the workers consume again: a new export goes through
    later = await post_export(http, healthy, org)
    assert (await wait_finished(db, later, healthy))["status"] == "succeeded"


def redelivered_and_not_claimable(cluster: Cluster, job_id: uuid.UUID) -> bool:
    """Whether a worker logged that a message for the job found it not claimable."""
    for path in cluster.logs.glob("worker-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if str(job_id) in line and '"msg":"export not claimable, nothing to do"' in line:
                return True
    return False


async def test_database_unreachable_longer_than_the_lease_mid_export_ends_in_one_retry(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    org, job_id, _ = await export_in_flight(healthy, http, db, models=100)
    broker = create_broker(healthy.direct)
    actors = declare_actors(broker, healthy.direct, context=None)
    try:
        _, _, dead_before = healthy.queue_counts()
        # When PostgreSQL is unreachable for every process for twice the lease: the COPY breaks,
        # the attempt can record neither its failure nor a lease renewal, and every tick fails
        healthy.pg.cut()
        # Then the API refuses new work with a 503 problem, and stores nothing
        async with http.post(
            f"{healthy.base}/analytics/v1/orgs/{org}/exports", json=HOURLY_MONTH, headers=healthy.auth(org)
        ) as reply:
            assert reply.status == 503, await reply.text()
            assert reply.content_type == "application/problem+json"
            assert reply.headers["Retry-After"] == "5"
        # (and a message for the job that arrives now cannot claim it)
        actors.run_export.send(str(job_id))
        await asyncio.sleep(6)
        healthy.pg.restore()
        healthy.s3.set_rate(None)
        # And once it is back, the sweep finds the lapsed lease and a second attempt finishes the job
        done = await wait_finished(db, job_id, healthy)
        assert done["status"] == "succeeded", (done["error_message"], dict(done))
        assert done["attempt"] == 2
        await assert_one_true_object(bucket, org, done)
        await eventually_no_uploads(bucket)
        assert await db.fetchval("SELECT count(*) FROM analytics.export_jobs WHERE org_id = $1", org) == 1
        # And nothing was dead-lettered: the ticks were skipped, the message was sent back for later
        deadline = time.monotonic() + 20
        while (counts := healthy.queue_counts())[1]:
            assert time.monotonic() < deadline, counts
            await asyncio.sleep(0.2)
        assert counts[2] == dead_before, healthy.log_tail()
        assert (await job_row(db, job_id))["attempt"] == 2
    finally:
        broker.close()


async def test_database_connection_killed_mid_stream_succeeds_on_retry(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    # Given an export far larger than the socket and client buffers (37 MiB): with S3 throttled,
    # the worker stops reading after two parts and PostgreSQL is left mid-COPY, still sending
    # (state 'active'). The upload is recorded with the first part, so the COPY is under way
    # by then; a smaller export could be wholly buffered on the client side before we look.
    org, job_id, _ = await export_in_flight(healthy, http, db, models=500)
    # When PostgreSQL terminates the backend that is streaming the COPY
    deadline = time.monotonic() + 10
    while not (
        killed := await db.fetchval(
            """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
               WHERE datname = current_database() AND state = 'active' AND query LIKE 'COPY%'
                 AND pid <> pg_backend_pid()"""
        )
    ):
        assert time.monotonic() < deadline, "the export's COPY never started"
        await asyncio.sleep(0.02)
    assert killed == 1
    healthy.s3.set_rate(None)
    # Then the attempt is retried from scratch and the job succeeds
    done = await wait_finished(db, job_id, healthy)
    assert done["status"] == "succeeded", (done["error_message"], dict(done))
    assert done["attempt"] == 2
    assert done["error_message"] is None
    await assert_one_true_object(bucket, org, done)
    await eventually_no_uploads(bucket)


async def test_duplicate_messages_and_racing_workers_run_a_job_once(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    org = uuid.uuid4()
    await seed_hours(db, org, models=50, hours=48)
    job_id = await post_export(http, healthy, org)
    # When the same message is delivered five more times, to two workers racing for it
    broker = create_broker(healthy.direct)
    actors = declare_actors(broker, healthy.direct, context=None)
    try:
        for _ in range(5):
            actors.run_export.send(str(job_id))
    finally:
        broker.close()
    # Then the job ran once: one attempt, one object
    done = await wait_finished(db, job_id, healthy)
    assert done["status"] == "succeeded"
    await asyncio.sleep(2)  # let every duplicate arrive and find nothing to claim
    assert (await job_row(db, job_id))["attempt"] == 1
    await assert_one_true_object(bucket, org, done)
    await eventually_no_uploads(bucket)


async def test_a_job_that_kills_its_worker_fails_after_max_attempts(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    # Given a job every worker dies on (we kill whichever worker claims it)
    org = uuid.uuid4()
    await seed_hours(db, org, models=100)
    healthy.s3.set_rate(SLOW_S3)
    job_id = await post_export(http, healthy, org)
    for attempt in (1, 2, 3):
        running = await wait_until(
            db, job_id, f"status = 'running' AND attempt = {attempt} AND upload_id IS NOT NULL", healthy
        )
        os.kill(worker_pid(running), signal.SIGKILL)
        healthy.ensure_workers()
    # Then it is failed for good after the third attempt, not retried forever
    failed = await wait_finished(db, job_id, healthy)
    assert failed["status"] == "failed"
    assert failed["attempt"] == 3
    assert failed["error_message"].startswith("gave up after 3 attempts"), failed["error_message"]
    await asyncio.sleep(3)
    assert (await job_row(db, job_id))["attempt"] == 3
    healthy.s3.set_rate(None)
    await eventually_no_uploads(bucket)
    assert await objects_of(bucket, org) == []


async def test_sigterm_hands_a_running_export_back_and_exits_in_bounded_time(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    org, job_id, running = await export_in_flight(healthy, http, db, models=200)
    worker = next(w for w in healthy.workers if w.pid == worker_pid(running))
    # When its worker is asked to stop
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.wait, 30)
    took = time.monotonic() - started
    # Then it exits cleanly within its grace period and the cleanup bound, having handed the job back
    assert code == 0, healthy.log_tail()
    assert took < 2 + 15 + 10  # EXPORT_SHUTDOWN_GRACE + hand-back bound + Dramatiq's stop
    handed = await job_row(db, job_id)
    assert handed["handbacks"] == 1
    healthy.s3.set_rate(None)
    healthy.ensure_workers()
    # And another worker completes it; the hand-back was not charged as an attempt
    done = await wait_finished(db, job_id, healthy)
    assert done["status"] == "succeeded", (done["error_message"], dict(done))
    assert (done["attempt"], done["handbacks"]) == (2, 1)
    await assert_one_true_object(bucket, org, done)
    await eventually_no_uploads(bucket)


async def test_a_burst_of_200_jobs_across_20_orgs_all_succeed(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    orgs = [uuid.uuid4() for _ in range(20)]
    for org in orgs:
        await seed_hours(db, org, models=3, hours=48)
    body = {
        "timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-03T00:00:00Z"},
        "granularity": "daily",
    }
    job_ids = await asyncio.gather(
        *(post_export(http, healthy, org, body) for org in orgs for _ in range(10))
    )
    assert len(set(job_ids)) == 200
    deadline = time.monotonic() + 180
    while True:
        counts = dict(await db.fetch("SELECT status::text, count(*) FROM analytics.export_jobs GROUP BY 1"))
        if counts.get("succeeded") == 200:
            break
        assert time.monotonic() < deadline, f"not all jobs succeeded: {counts}\n{healthy.log_tail()}"
        await asyncio.sleep(0.5)
    assert await db.fetchval("SELECT max(attempt) FROM analytics.export_jobs") == 1
    for org in orgs:
        assert len(await objects_of(bucket, org)) == 10 * 2  # a data file and a manifest each
    await eventually_no_uploads(bucket)


async def test_a_concurrent_burst_beyond_the_per_org_limit_gets_429s_and_nothing_more(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    # Given no worker can take anything (the broker is cut), so every accepted job stays pending
    org = uuid.uuid4()
    healthy.rabbit.cut()
    body = {
        "timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-02T00:00:00Z"},
        "granularity": "daily",
    }

    async def post() -> tuple[int, str | None]:
        url = f"{healthy.base}/analytics/v1/orgs/{org}/exports"
        async with http.post(url, json=body, headers=healthy.auth(org)) as reply:
            return reply.status, reply.headers.get("Retry-After")

    # When 14 requests for one org arrive at once, with at most 10 active allowed
    answers = await asyncio.gather(*(post() for _ in range(14)))
    # Then exactly 10 were accepted and 4 refused with Retry-After, and the table agrees
    assert sorted(status for status, _ in answers) == [202] * 10 + [429] * 4, answers
    assert all(retry_after and int(retry_after) > 0 for status, retry_after in answers if status == 429)
    assert await db.fetchval("SELECT count(*) FROM analytics.export_jobs WHERE org_id = $1", org) == 10


async def test_cancelling_a_running_export_stops_it_and_leaves_no_parts(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    # Given a large export streaming slowly
    org, job_id, _ = await export_in_flight(healthy, http, db, models=200)
    # When finance cancels it, from a tool that names itself
    url = f"{healthy.base}/analytics/v1/orgs/{org}/exports/{job_id}/cancel"
    caller = {**healthy.auth(org), "User-Agent": "month-end-close/1.2"}
    async with http.post(url, headers=caller) as reply:
        assert reply.status == 202
        assert (await reply.json())["cancelRequestedAt"] is not None
    # Then it stops at its next part and is cancelled, with no upload and no object left
    done = await wait_finished(db, job_id, healthy)
    assert done["status"] == "cancelled", dict(done)
    assert done["attempt"] == 1
    healthy.s3.set_rate(None)
    await eventually_no_uploads(bucket)
    assert await objects_of(bucket, org) == []
    # And the audit trail says who asked to cancel, from where, before the worker stopped it
    events_url = f"{healthy.base}/analytics/v1/orgs/{org}/exports/{job_id}/events"
    async with http.get(events_url, headers=healthy.auth(org)) as reply:
        events = (await reply.json())["items"]
    assert [e["event"] for e in events] == ["created", "started", "cancel_requested", "cancelled"]
    asked = events[2]
    assert (asked["actor"], asked["clientIp"], asked["userAgent"]) == (
        "faults",
        "127.0.0.1",
        "month-end-close/1.2",
    )
    assert events[3]["actor"] == events[1]["actor"]  # the worker that ran it
    # And cancelling again is a conflict
    async with http.post(url, headers=healthy.auth(org)) as reply:
        assert reply.status == 409


async def test_a_worker_stopped_between_its_data_file_and_its_manifest_has_not_succeeded(
    healthy: Cluster, http: aiohttp.ClientSession, db: asyncpg.Connection, bucket: S3Client
) -> None:
    # Given S3 never answers a manifest's upload, and an export of several parts
    org = uuid.uuid4()
    await seed_hours(db, org, models=100)
    healthy.s3.hold(b".manifest.json")
    held_before = healthy.s3.held
    job_id = await post_export(http, healthy, org)
    deadline = time.monotonic() + 60
    while healthy.s3.held == held_before:
        assert time.monotonic() < deadline, f"the manifest was never written\n{healthy.log_tail()}"
        await asyncio.sleep(0.05)
    # When its worker is killed while it writes the manifest (its data file complete in S3)
    running = await job_row(db, job_id)
    key = f"analytics/exports/{org}/{job_id}"
    assert await objects_of(bucket, org) == [f"{key}.csv"]
    os.kill(worker_pid(running), signal.SIGKILL)
    healthy.s3.release()
    # Then there is no manifest and the job has not succeeded: the API has none to give
    assert running["status"] == "running"
    assert await objects_of(bucket, org) == [f"{key}.csv"]
    url = f"{healthy.base}/analytics/v1/orgs/{org}/exports/{job_id}/manifest"
    async with http.get(url, headers=healthy.auth(org)) as reply:
        assert reply.status == 409, await reply.text()
    # And another worker, once the lease lapses, writes both anew and only then succeeds
    done = await wait_finished(db, job_id, healthy)
    assert done["status"] == "succeeded", (done["error_message"], dict(done))
    assert done["attempt"] == 2
    await assert_one_true_object(bucket, org, done)
    async with http.get(url, headers=healthy.auth(org)) as reply:
        assert reply.status == 200
        assert hashlib.sha256(await reply.read()).hexdigest() == done["manifest_checksum"]


async def test_the_export_queues_are_quorum_queues(healthy: Cluster) -> None:
    # The cluster's vhost defaults to quorum queues: Dramatiq's queues, declared without a type,
    # are replicated ones (the broker restarts above ran against them)
    types = queue_types(healthy.direct.rabbitmq_url)
    queue = healthy.direct.queue_name
    assert {name: types.get(name) for name in (queue, f"{queue}.DQ", f"{queue}.XQ")} == {
        queue: "quorum",
        f"{queue}.DQ": "quorum",
        f"{queue}.XQ": "quorum",
    }
