"""Housekeeper: expiry (object first, then the job) and re-publishing stale pending jobs."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from service.housekeeping import UNCLAIMED_AFTER_SECONDS, Housekeeper
from service.job import JobStatus
from service.storage import ObjectStore

from .fakes import FakeQueue, FakeRepository, FakeS3, client_error, make_job, succeeded_job


def housekeeper(repo: FakeRepository, s3: FakeS3) -> Housekeeper:
    return Housekeeper(repo, ObjectStore(s3, 8 * 1024 * 1024))  # type: ignore[arg-type]


async def test_expire_due_deletes_the_object_then_expires_the_job(repo: FakeRepository, s3: FakeS3) -> None:
    # Given one succeeded job past its expiry (its object in the bucket) and one still valid
    due = succeeded_job(expires_in=-timedelta(minutes=1))
    valid = succeeded_job(expires_in=timedelta(hours=1))
    repo.jobs.update({due.job_id: due, valid.job_id: valid})
    key = f"analytics/exports/{due.org_id}/{due.job_id}.csv"
    s3.objects[("analytics-exports", key)] = {"Body": b"csv"}
    # When the sweep runs
    expired = await housekeeper(repo, s3).expire_due()
    # Then only the due job's object is deleted and the job expired, in that order
    assert expired == 1
    assert s3.called("delete_object") == [{"Bucket": "analytics-exports", "Key": key}]
    assert s3.objects == {}
    assert repo.jobs[due.job_id].status is JobStatus.EXPIRED
    assert repo.jobs[valid.job_id].status is JobStatus.SUCCEEDED
    assert [name for name, _ in repo.calls] == ["due_for_expiry", "expire"]


async def test_expire_due_passes_the_batch_size(repo: FakeRepository, s3: FakeS3) -> None:
    await housekeeper(repo, s3).expire_due(batch=7)
    assert repo.called("due_for_expiry") == [(7,)]


async def test_storage_failure_leaves_the_job_succeeded(repo: FakeRepository, s3: FakeS3) -> None:
    # Given S3 refuses the delete
    due = succeeded_job(expires_in=-timedelta(minutes=1))
    repo.jobs[due.job_id] = due
    s3.errors["delete_object"] = client_error("SlowDown", 503, "DeleteObject")
    # When the sweep runs
    expired = await housekeeper(repo, s3).expire_due()
    # Then the job stays succeeded, to be retried next sweep
    assert expired == 0
    assert repo.called("expire") == []
    assert repo.jobs[due.job_id].status is JobStatus.SUCCEEDED


async def test_one_storage_failure_does_not_stop_the_batch(
    repo: FakeRepository, s3: FakeS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two due jobs in different buckets, one of which refuses deletes
    stuck = succeeded_job(expires_in=-timedelta(hours=2), output_uri="s3://broken-bucket/a.csv")
    fine = succeeded_job(expires_in=-timedelta(hours=1))
    repo.jobs.update({stuck.job_id: stuck, fine.job_id: fine})

    real_delete = s3.delete_object

    async def delete_object(**kwargs: object) -> object:
        if kwargs["Bucket"] == "broken-bucket":
            raise client_error("AccessDenied", 403, "DeleteObject")
        return await real_delete(**kwargs)

    monkeypatch.setattr(s3, "delete_object", delete_object)
    assert await housekeeper(repo, s3).expire_due() == 1
    assert repo.jobs[stuck.job_id].status is JobStatus.SUCCEEDED
    assert repo.jobs[fine.job_id].status is JobStatus.EXPIRED


async def test_a_job_expired_by_someone_else_is_not_counted(
    repo: FakeRepository, s3: FakeS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    due = succeeded_job(expires_in=-timedelta(minutes=1))
    repo.jobs[due.job_id] = due
    sweeper = housekeeper(repo, s3)
    real_expire = repo.expire

    async def expire_raced(job_id: uuid.UUID) -> object:
        await real_expire(job_id)  # another scheduler got there first
        return await real_expire(job_id)

    monkeypatch.setattr(repo, "expire", expire_raced)
    assert await sweeper.expire_due() == 0


async def test_requeue_stale_enqueues_and_marks_each(
    repo: FakeRepository, queue: FakeQueue, s3: FakeS3
) -> None:
    jobs = [make_job() for _ in range(3)]
    repo.jobs.update({job.job_id: job for job in jobs})
    repo.stale = [job.job_id for job in jobs]
    sent = await housekeeper(repo, s3).requeue_stale(queue, unpublished_after=30.0, batch=50)
    assert sent == 3
    assert queue.enqueued == repo.stale
    assert repo.called("mark_enqueued") == [(job_id,) for job_id in repo.stale]
    assert repo.called("stale_pending") == [(30.0, UNCLAIMED_AFTER_SECONDS, 50)]


async def test_requeue_stale_stops_at_the_first_queue_failure(repo: FakeRepository, s3: FakeS3) -> None:
    # Given a broker that accepts one message and then goes away
    queue = FakeQueue(down_after=1)
    repo.stale = [uuid.uuid4() for _ in range(4)]
    # When the sweep runs
    sent = await housekeeper(repo, s3).requeue_stale(queue, unpublished_after=30.0)
    # Then the first was published and marked, and nothing after the failure was tried or marked
    assert sent == 1
    assert queue.enqueued == repo.stale[:1]
    assert repo.called("mark_enqueued") == [(repo.stale[0],)]


async def test_requeue_stale_with_the_broker_down_marks_nothing(repo: FakeRepository, s3: FakeS3) -> None:
    repo.stale = [uuid.uuid4(), uuid.uuid4()]
    sent = await housekeeper(repo, s3).requeue_stale(FakeQueue(down_after=0), 30.0)
    assert sent == 0
    assert repo.called("mark_enqueued") == []


async def test_requeue_stale_with_nothing_stale_does_nothing(
    repo: FakeRepository, queue: FakeQueue, s3: FakeS3
) -> None:
    assert await housekeeper(repo, s3).requeue_stale(queue, 30.0) == 0
    assert queue.enqueued == []
