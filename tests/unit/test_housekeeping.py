"""Housekeeper: expiry (object first, then the job) and re-publishing stale pending jobs."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from service.housekeeping import UNCLAIMED_AFTER_SECONDS, UNPUBLISHED_AFTER_SECONDS, Housekeeper, SweepReport
from service.job import JobStatus
from service.settings import Settings
from service.storage import ObjectStore

from .fakes import FakeQueue, FakeRepository, FakeS3, client_error, make_job, succeeded_job


def housekeeper(repo: FakeRepository, s3: FakeS3) -> Housekeeper:
    return Housekeeper(repo, ObjectStore(s3, 8 * 1024 * 1024, retry_window=0), Settings())  # type: ignore[arg-type]


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


async def test_sweep_publishes_stale_pending_jobs_and_marks_each(
    repo: FakeRepository, queue: FakeQueue, s3: FakeS3
) -> None:
    jobs = [make_job() for _ in range(3)]
    repo.jobs.update({job.job_id: job for job in jobs})
    repo.stale = [job.job_id for job in jobs]
    report = await housekeeper(repo, s3).sweep(queue, batch=50)
    assert report.published == 3
    assert queue.enqueued == repo.stale
    assert repo.called("mark_enqueued") == [(job_id,) for job_id in repo.stale]
    assert repo.called("stale_pending") == [(UNPUBLISHED_AFTER_SECONDS, UNCLAIMED_AFTER_SECONDS, 50)]


async def test_sweep_stops_publishing_at_the_first_queue_failure(repo: FakeRepository, s3: FakeS3) -> None:
    # Given a broker that accepts one message and then goes away
    queue = FakeQueue(down_after=1)
    repo.stale = [uuid.uuid4() for _ in range(4)]
    # When the sweep runs
    report = await housekeeper(repo, s3).sweep(queue)
    # Then the first was published and marked, and nothing after the failure was tried or marked
    assert report.published == 1
    assert queue.enqueued == repo.stale[:1]
    assert repo.called("mark_enqueued") == [(repo.stale[0],)]


async def test_sweep_with_nothing_to_do_does_nothing(
    repo: FakeRepository, queue: FakeQueue, s3: FakeS3
) -> None:
    assert await housekeeper(repo, s3).sweep(queue) == SweepReport()
    assert queue.enqueued == []


async def test_sweep_reclaims_lapsed_jobs_and_fails_exhausted_ones(
    repo: FakeRepository, queue: FakeQueue, s3: FakeS3
) -> None:
    # Given two running jobs whose workers died: one with attempts left, one on its last attempt
    lapsed = datetime.now(UTC) - timedelta(seconds=1)
    retry = make_job(status=JobStatus.RUNNING, attempt=1, lease_expires_at=lapsed)
    last = make_job(status=JobStatus.RUNNING, attempt=3, lease_expires_at=lapsed)
    alive = make_job(status=JobStatus.RUNNING, attempt=1, lease_expires_at=lapsed + timedelta(minutes=5))
    repo.jobs.update({j.job_id: j for j in (retry, last, alive)})
    # When the sweep runs
    report = await housekeeper(repo, s3).sweep(queue)
    # Then the first is pending again, the second failed, the live one untouched
    assert (report.requeued, report.failed) == (1, 1)
    assert repo.jobs[retry.job_id].status is JobStatus.PENDING
    assert repo.jobs[last.job_id].status is JobStatus.FAILED
    assert repo.jobs[alive.job_id].status is JobStatus.RUNNING
    assert repo.called("requeue_lapsed")[0][0] == Settings().export_max_attempts


async def test_sweep_cleans_up_after_failed_jobs(repo: FakeRepository, queue: FakeQueue, s3: FakeS3) -> None:
    # Given a failed job whose upload could not be aborted at the time, and a stray object at its key
    store = ObjectStore(s3, 8 * 1024 * 1024, retry_window=0)
    failed = make_job(status=JobStatus.FAILED)
    key = f"analytics/exports/{failed.org_id}/{failed.job_id}.csv"
    upload = await store.start_upload("analytics-exports", key, "attachment")
    s3.objects[("analytics-exports", key)] = {"Body": b"partial"}
    repo.jobs[failed.job_id] = replace(failed, upload_id=upload.upload_id)
    # When the sweep runs
    report = await housekeeper(repo, s3).sweep(queue)
    # Then the upload is aborted, the object deleted, and the job no longer points at an upload
    assert report.cleaned == 1
    assert s3.uploads == {}
    assert s3.objects == {}
    assert repo.jobs[failed.job_id].upload_id is None


async def test_sweep_keeps_a_leftover_it_could_not_clean(
    repo: FakeRepository, queue: FakeQueue, s3: FakeS3
) -> None:
    failed = make_job(status=JobStatus.FAILED, upload_id="u-1")
    repo.jobs[failed.job_id] = failed
    s3.errors["abort_multipart_upload"] = client_error("SlowDown", 503, "AbortMultipartUpload")
    report = await housekeeper(repo, s3).sweep(queue)
    assert report.cleaned == 0
    assert repo.jobs[failed.job_id].upload_id == "u-1"  # tried again next sweep


async def test_sweep_aborts_old_unrecorded_uploads_in_every_bucket(
    repo: FakeRepository, queue: FakeQueue, s3: FakeS3
) -> None:
    store = ObjectStore(s3, 8 * 1024 * 1024, retry_window=0)
    orphan = await store.start_upload("analytics-exports", "analytics/exports/x/y.csv", "attachment")
    young = await store.start_upload("analytics-exports", "analytics/exports/x/z.csv", "attachment")
    running = make_job(status=JobStatus.RUNNING)
    repo.jobs[running.job_id] = running
    key = f"analytics/exports/{running.org_id}/{running.job_id}.csv"
    recorded = await store.start_upload("analytics-exports", key, "attachment")
    for upload in (orphan, recorded):
        s3.uploads[upload.upload_id]["Initiated"] -= timedelta(hours=3)
    report = await housekeeper(repo, s3).sweep(queue)
    # The old upload of no unfinished job is aborted; the young one and the running job's stay
    assert report.aborted == 1
    assert set(s3.uploads) == {young.upload_id, recorded.upload_id}
