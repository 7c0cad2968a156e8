"""ExportService: create (store, then enqueue), get, list and download."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from service.errors import Conflict, Gone, IdempotencyKeyReused, NotFound
from service.exports import ExportService, request_fingerprint
from service.job import ExportRequest, Granularity, JobStatus
from service.storage import ObjectStore
from tests.support.fakes import ORG_A, ORG_B, T0, FakeQueue, FakeRepository, FakeS3, make_job, succeeded_job


def service(repo: FakeRepository, s3: FakeS3, queue: FakeQueue) -> ExportService:
    return ExportService(repo, ObjectStore(s3, 8 * 1024 * 1024, retry_window=0), queue)  # type: ignore[arg-type]


def request() -> ExportRequest:
    return ExportRequest(
        org_id=ORG_A,
        requested_by="alice@example.com",
        start=T0,
        end=T0 + timedelta(days=1),
        granularity=Granularity.HOURLY,
        models=("gpt-4o",),
    )


async def test_create_stores_enqueues_and_marks_enqueued(
    repo: FakeRepository, s3: FakeS3, queue: FakeQueue
) -> None:
    job = (await service(repo, s3, queue).create(request())).job
    assert job.status is JobStatus.PENDING
    assert job.org_id == ORG_A
    assert job.granularity is Granularity.HOURLY
    assert job.models == ("gpt-4o",)
    assert repo.jobs[job.job_id].job_id == job.job_id
    assert queue.enqueued == [job.job_id]
    assert repo.called("mark_enqueued") == [(job.job_id,)]
    # The row exists before the message is published
    assert [name for name, _ in repo.calls] == ["create", "mark_enqueued"]


async def test_create_with_the_broker_down_still_returns_the_job(repo: FakeRepository, s3: FakeS3) -> None:
    # Given a broker that refuses every publish
    queue = FakeQueue(down_after=0)
    # When a job is created
    job = (await service(repo, s3, queue).create(request())).job
    # Then it is stored and returned, pending, but not marked enqueued (the sweep will publish it)
    assert job.job_id in repo.jobs
    assert job.status is JobStatus.PENDING
    assert queue.enqueued == []
    assert repo.called("mark_enqueued") == []
    assert repo.jobs[job.job_id].enqueued_at is None


async def test_get_returns_the_orgs_job(repo: FakeRepository, s3: FakeS3, queue: FakeQueue) -> None:
    job = make_job()
    repo.jobs[job.job_id] = job
    assert await service(repo, s3, queue).get(ORG_A, job.job_id) == job


async def test_get_of_another_orgs_job_is_not_found(
    repo: FakeRepository, s3: FakeS3, queue: FakeQueue
) -> None:
    job = make_job(org_id=ORG_B)
    repo.jobs[job.job_id] = job
    with pytest.raises(NotFound):
        await service(repo, s3, queue).get(ORG_A, job.job_id)


async def test_download_of_an_unknown_job_is_not_found(
    repo: FakeRepository, s3: FakeS3, queue: FakeQueue
) -> None:
    with pytest.raises(NotFound):
        await service(repo, s3, queue).download(ORG_A, uuid.uuid4())
    assert s3.calls == []


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED])
async def test_download_of_an_unfinished_or_failed_job_is_a_conflict(
    repo: FakeRepository, s3: FakeS3, queue: FakeQueue, status: JobStatus
) -> None:
    job = make_job(status=status)
    repo.jobs[job.job_id] = job
    with pytest.raises(Conflict, match=status.value):
        await service(repo, s3, queue).download(ORG_A, job.job_id)
    assert s3.calls == []


async def test_download_of_an_expired_job_is_gone(repo: FakeRepository, s3: FakeS3, queue: FakeQueue) -> None:
    job = succeeded_job(expires_in=-timedelta(days=1), status=JobStatus.EXPIRED)
    repo.jobs[job.job_id] = job
    with pytest.raises(Gone):
        await service(repo, s3, queue).download(ORG_A, job.job_id)
    assert s3.calls == []


@pytest.mark.parametrize("expires_in", [timedelta(seconds=-1), timedelta(hours=-5), timedelta(seconds=0.5)])
async def test_download_of_a_succeeded_job_past_its_expiry_is_gone(
    repo: FakeRepository, s3: FakeS3, queue: FakeQueue, expires_in: timedelta
) -> None:
    # Given a succeeded job the expiry sweep has not reached yet
    job = succeeded_job(expires_in=expires_in)
    repo.jobs[job.job_id] = job
    with pytest.raises(Gone):
        await service(repo, s3, queue).download(ORG_A, job.job_id)
    assert s3.calls == []


async def test_download_of_a_succeeded_job_is_a_url_valid_until_expiry(
    repo: FakeRepository, s3: FakeS3, queue: FakeQueue
) -> None:
    # Given a succeeded job expiring in two hours
    job = succeeded_job(expires_in=timedelta(hours=2))
    repo.jobs[job.job_id] = job
    assert job.expires_at is not None
    # When downloaded
    download = await service(repo, s3, queue).download(ORG_A, job.job_id)
    seconds_left = (job.expires_at - datetime.now(UTC)).total_seconds()
    # Then the URL is for the job's object and never outlives the job
    [presign] = s3.called("generate_presigned_url")
    assert presign["ClientMethod"] == "get_object"
    assert (presign["Bucket"], presign["Key"]) == (
        "analytics-exports",
        f"analytics/exports/{ORG_A}/{job.job_id}.csv",
    )
    assert seconds_left - 60 < presign["ExpiresIn"] <= seconds_left
    assert download.expires_at == job.expires_at
    query = parse_qs(urlsplit(download.url).query)
    assert int(query["X-Amz-Expires"][0]) == presign["ExpiresIn"]


async def test_download_uses_the_bucket_in_the_output_uri(
    repo: FakeRepository, s3: FakeS3, queue: FakeQueue
) -> None:
    job = succeeded_job(output_uri="s3://org-a-exports/analytics/exports/a/b.csv")
    repo.jobs[job.job_id] = job
    await service(repo, s3, queue).download(ORG_A, job.job_id)
    [presign] = s3.called("generate_presigned_url")
    assert (presign["Bucket"], presign["Key"]) == ("org-a-exports", "analytics/exports/a/b.csv")


async def test_list_passes_the_query_through(repo: FakeRepository, s3: FakeS3, queue: FakeQueue) -> None:
    failed = make_job(status=JobStatus.FAILED)
    repo.jobs[failed.job_id] = failed
    pending = make_job()
    repo.jobs[pending.job_id] = pending
    page = await service(repo, s3, queue).list_page(ORG_A, status=JobStatus.FAILED, limit=10, cursor=None)
    assert page.items == (failed,)
    assert page.next_cursor is None


async def test_an_idempotent_replay_returns_the_same_job_without_a_second_message(
    repo: FakeRepository, s3: FakeS3, queue: FakeQueue
) -> None:
    exports = service(repo, s3, queue)
    first = await exports.create(request(), idempotency_key="key-1")
    again = await exports.create(request(), idempotency_key="key-1")
    assert (first.new, again.new) == (True, False)
    assert again.job.job_id == first.job.job_id
    assert queue.enqueued == [first.job.job_id]


async def test_the_same_key_for_another_request_is_refused(
    repo: FakeRepository, s3: FakeS3, queue: FakeQueue
) -> None:
    exports = service(repo, s3, queue)
    await exports.create(request(), idempotency_key="key-1")
    other = replace(request(), granularity=Granularity.MONTHLY)
    with pytest.raises(IdempotencyKeyReused):
        await exports.create(other, idempotency_key="key-1")


def test_the_fingerprint_ignores_nothing_that_matters() -> None:
    base = request()
    assert request_fingerprint(base) == request_fingerprint(replace(base))
    for changed in (
        replace(base, granularity=Granularity.MONTHLY),
        replace(base, models=("another-model",)),
        replace(base, models=None),
        replace(base, end=base.end + timedelta(seconds=1)),
        replace(base, org_id=ORG_B),
    ):
        assert request_fingerprint(changed) != request_fingerprint(base)
