"""Exporter.run: one pending job -> one checksummed CSV object, or a failed job and nothing left behind."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from types import MappingProxyType

import orjson
import pytest

from service.api.contract import validate
from service.errors import RetryableStorageError
from service.exporter import Exporter, content_disposition
from service.job import Granularity, Job, JobStatus
from service.settings import Settings
from service.storage import ObjectStore
from tests.support.fakes import ORG_A, ORG_B, T0, FakeRepository, FakeS3, client_error, make_job

PART = 16
CSV = [
    b"bucket_start,organization_id,model_id,request_count,tokens_total,error_count,cost_total,currency\n",
    b"2026-11-01T00:00:00Z,org,gpt-4o,120,48000,1,0.123456,USD\n",
    b"2026-11-02T00:00:00Z,org,gpt-4o,80,32000,0,0.082304,USD\n",
]


def exporter(
    repo: FakeRepository, s3: FakeS3, settings: Settings | None = None, part: int = PART
) -> Exporter:
    settings = settings or Settings()
    return Exporter(repo, ObjectStore(s3, part, retry_window=0), settings)  # type: ignore[arg-type]


@pytest.fixture
def job(repo: FakeRepository) -> Job:
    pending = make_job(granularity=Granularity.HOURLY)
    repo.jobs[pending.job_id] = pending
    repo.chunks = list(CSV)
    repo.row_count = 2
    return pending


async def test_success_uploads_the_csv_and_records_its_checksum(
    repo: FakeRepository, s3: FakeS3, job: Job
) -> None:
    # When the job runs
    done = await exporter(repo, s3).run(job.job_id)

    # Then the object holds exactly the CSV bytes, at the spec's key in the default bucket
    data = b"".join(CSV)
    key = f"analytics/exports/{job.org_id}/{job.job_id}.csv"
    assert s3.objects[("analytics-exports", key)]["Body"] == data
    assert len(s3.called("upload_part")) > 1  # the CSV spans several parts
    # And the job succeeded with the facts of exactly those bytes
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    assert done.output_uri == f"s3://analytics-exports/{key}"
    assert done.checksum == hashlib.sha256(data).hexdigest()
    assert done.byte_count == len(data)
    assert done.row_count == 2
    assert repo.jobs[job.job_id] == done
    # And the object's tags agree with the job (several parts: tagged once complete)
    assert s3.objects[("analytics-exports", key)]["Tags"] == {
        "sha256": done.checksum,
        "byte-count": str(len(data)),
        "row-count": "2",
        "job-id": str(job.job_id),
        "org-id": str(job.org_id),
    }
    # And no upload is left open, and nothing failed
    assert s3.uploads == {}
    assert repo.called("fail") == []


async def test_the_manifest_is_the_last_write_and_states_the_files_facts_and_totals(
    repo: FakeRepository, s3: FakeS3, job: Job
) -> None:
    # When the job runs
    done = await exporter(repo, s3).run(job.job_id)
    # Then the manifest went to S3 after the data file was complete, and before the job succeeded
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    s3_calls = [name for name, _ in s3.calls]
    assert s3_calls[-2:] == ["put_object_tagging", "put_object"]
    [put] = s3.called("put_object")
    assert (put["Key"], put["ContentType"]) == (job.manifest_key, "application/json")
    assert [name for name, _ in repo.calls][-1] == "complete"
    # And the job records it, byte for byte, with its SHA-256
    manifest = put["Body"]
    assert repo.manifests[job.job_id] == manifest
    assert done.manifest_checksum == hashlib.sha256(manifest).hexdigest()
    # And it is what the API documents: the file's facts and the totals of its rows, exactly
    document = orjson.loads(manifest)
    validate("ExportManifest", document)
    data = b"".join(CSV)
    assert document["files"] == [
        {
            "key": job.object_key,
            "rows": 2,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "contentType": "text/csv; charset=utf-8",
            "contentEncoding": None,
        }
    ]
    assert document["totals"] == {
        "USD": {"costTotal": "0.205760", "requestCount": 200, "tokensTotal": 80000, "errorCount": 1}
    }
    assert (document["jobId"], document["orgId"]) == (str(job.job_id), str(job.org_id))
    assert document["request"]["coverage"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-11-08T00:00:00Z"}


async def test_rows_the_tally_did_not_count_fail_the_export(
    repo: FakeRepository, s3: FakeS3, job: Job
) -> None:
    # Given COPY reports a row count its bytes do not hold (a bug, never a passing fault)
    repo.row_count = 3
    # When the job runs
    failed = await exporter(repo, s3).run(job.job_id)
    # Then it fails, saying so, and leaves nothing in the bucket
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert "the tally counted 2 rows where COPY sent 3" in (failed.error_message or "")
    assert s3.objects == {}


async def test_success_records_the_upload_id_and_the_signed_url_ttl(
    repo: FakeRepository, s3: FakeS3, job: Job
) -> None:
    settings = Settings(export_signed_url_ttl=3600.0)
    await exporter(repo, s3, settings).run(job.job_id)
    [(job_id, upload_id)] = repo.called("set_upload_id")
    assert job_id == job.job_id
    assert upload_id == s3.called("complete_multipart_upload")[0]["UploadId"]
    assert {call["UploadId"] for call in s3.called("upload_part")} == {upload_id}
    [(_, _, ttl)] = repo.called("complete")
    assert ttl == 3600.0


async def test_content_disposition_names_the_file(repo: FakeRepository, s3: FakeS3, job: Job) -> None:
    await exporter(repo, s3).run(job.job_id)
    disposition = s3.called("create_multipart_upload")[0]["ContentDisposition"]
    assert disposition == (
        f'attachment; filename="analytics-export-hourly-20261101-20261108-{job.job_id}.csv"'
    )


async def test_per_org_bucket_override_is_honoured(repo: FakeRepository, s3: FakeS3) -> None:
    # Given org B exports to its own bucket
    settings = Settings(s3_bucket_overrides=MappingProxyType({ORG_B: "org-b-exports"}))
    job_b = make_job(org_id=ORG_B)
    job_a = make_job(org_id=ORG_A)
    repo.jobs.update({job_b.job_id: job_b, job_a.job_id: job_a})
    # When both run
    done_b = await exporter(repo, s3, settings).run(job_b.job_id)
    done_a = await exporter(repo, s3, settings).run(job_a.job_id)
    # Then B's object is in its bucket, A's in the default one
    assert done_b is not None
    assert done_a is not None
    assert done_b.output_uri == f"s3://org-b-exports/analytics/exports/{ORG_B}/{job_b.job_id}.csv"
    assert done_a.output_uri == f"s3://analytics-exports/analytics/exports/{ORG_A}/{job_a.job_id}.csv"
    assert {bucket for bucket, _ in s3.objects} == {"org-b-exports", "analytics-exports"}


async def test_empty_export_is_a_header_only_file(repo: FakeRepository, s3: FakeS3, job: Job) -> None:
    repo.chunks = [CSV[0]]
    repo.row_count = 0
    done = await exporter(repo, s3).run(job.job_id)
    assert done is not None
    assert done.row_count == 0
    assert done.checksum == hashlib.sha256(CSV[0]).hexdigest()


@pytest.mark.parametrize("status", [JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED])
async def test_a_job_that_is_not_pending_is_left_alone(
    repo: FakeRepository, s3: FakeS3, status: JobStatus
) -> None:
    job = make_job(status=status, attempt=1)
    repo.jobs[job.job_id] = job
    assert await exporter(repo, s3).run(job.job_id) is None
    assert s3.calls == []
    assert repo.jobs[job.job_id] == job
    assert repo.called("fail") == []


async def test_an_unknown_job_is_left_alone(repo: FakeRepository, s3: FakeS3) -> None:
    assert await exporter(repo, s3).run(make_job().job_id) is None
    assert s3.calls == []


async def test_a_dropped_connection_while_copying_retries_the_job_later(
    repo: FakeRepository, s3: FakeS3, job: Job
) -> None:
    # Given the database connection drops mid-export (after some parts went out)
    repo.copy_error = ConnectionResetError("connection reset by peer")
    # When the job runs
    retried = await exporter(repo, s3).run(job.job_id)
    # Then the upload is aborted, nothing is completed, and the job waits for another attempt
    assert len(s3.called("upload_part")) >= 1
    assert len(s3.called("abort_multipart_upload")) == 1
    assert s3.uploads == {}
    assert s3.objects == {}
    assert repo.called("complete") == []
    [(job_id, reason, backoff)] = repo.called("retry")
    assert job_id == job.job_id
    assert reason.startswith("attempt 1 failed: network error: ConnectionResetError")
    assert backoff == Settings().export_worker_interval
    assert retried is not None
    assert retried.status is JobStatus.PENDING
    assert retried.upload_id is None  # aborted, so the next attempt has nothing to abort


async def test_backoff_doubles_per_charged_attempt(repo: FakeRepository, s3: FakeS3) -> None:
    pending = make_job(attempt=2, handbacks=1)  # one charged attempt so far, one handed back
    repo.jobs[pending.job_id] = pending
    repo.copy_error = ConnectionResetError("reset")
    await exporter(repo, s3).run(pending.job_id)
    [(_, reason, backoff)] = repo.called("retry")
    assert reason.startswith("attempt 3 failed")
    assert backoff == 2 * Settings().export_worker_interval


async def test_a_retryable_failure_on_the_last_attempt_fails_the_job(
    repo: FakeRepository, s3: FakeS3
) -> None:
    pending = make_job(attempt=2)
    repo.jobs[pending.job_id] = pending
    repo.copy_error = ConnectionResetError("reset")
    failed = await exporter(repo, s3).run(pending.job_id)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert (failed.error_message or "").startswith("gave up after 3 attempts: network error")
    assert repo.called("retry") == []


async def test_an_unexpected_error_fails_the_job_at_once(repo: FakeRepository, s3: FakeS3, job: Job) -> None:
    repo.copy_error = ValueError("a bug")
    failed = await exporter(repo, s3).run(job.job_id)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert failed.error_message == "internal error: ValueError: a bug"
    assert s3.uploads == {}


async def test_a_retry_aborts_the_previous_attempts_upload_first(repo: FakeRepository, s3: FakeS3) -> None:
    # Given a job whose previous attempt died with its upload half done
    stale = await s3.create_multipart_upload(Bucket="analytics-exports", Key="k")
    pending = make_job(attempt=1, upload_id=str(stale["UploadId"]))
    repo.jobs[pending.job_id] = pending
    repo.chunks = list(CSV)
    repo.row_count = 2
    # When the next attempt runs
    done = await exporter(repo, s3).run(pending.job_id)
    # Then the old upload is aborted before a new one starts, and the export restarts from scratch
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    assert done.attempt == 2
    names = [name for name, _ in s3.calls]
    assert names.index("abort_multipart_upload") < names.index("create_multipart_upload", 1)
    assert s3.uploads == {}


async def test_storage_failure_message_is_the_storage_error(
    repo: FakeRepository, s3: FakeS3, job: Job
) -> None:
    s3.errors["upload_part"] = client_error("AccessDenied", 403, message="Access Denied")
    await exporter(repo, s3).run(job.job_id)
    [(_, reason)] = repo.called("fail")
    assert reason == "S3 upload of part 1 failed: AccessDenied: Access Denied"
    assert s3.uploads == {}


async def test_failure_to_start_the_upload_fails_the_job(repo: FakeRepository, s3: FakeS3, job: Job) -> None:
    s3.errors["create_multipart_upload"] = client_error("NoSuchBucket", 404, "CreateMultipartUpload")
    failed = await exporter(repo, s3).run(job.job_id)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert "NoSuchBucket" in (failed.error_message or "")
    # The upload is created with the first full part: nothing was sent, nothing is left to abort
    assert s3.called("upload_part") == []
    assert s3.called("abort_multipart_upload") == []
    assert (s3.uploads, s3.objects, repo.called("set_upload_id")) == ({}, {}, [])


async def test_a_small_export_is_created_with_its_checksum_in_three_requests_then_its_manifest(
    repo: FakeRepository, s3: FakeS3, job: Job
) -> None:
    # Given an export that fits in one part
    repo.chunks = list(CSV)
    repo.row_count = 2
    # When the job runs
    done = await exporter(repo, s3, part=1024).run(job.job_id)
    # Then the upload was created labelled (no copy), and its id recorded before the part went out
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    assert [name for name, _ in s3.calls] == [
        "create_multipart_upload",
        "upload_part",
        "complete_multipart_upload",
        "put_object",
    ]
    [(_, recorded)] = repo.called("set_upload_id")
    assert recorded == s3.called("upload_part")[0]["UploadId"]
    stored = s3.objects[("analytics-exports", done.object_key)]
    assert stored["Metadata"]["sha256"] == done.checksum == hashlib.sha256(b"".join(CSV)).hexdigest()
    assert stored["Metadata"]["row-count"] == "2"
    assert stored["ContentDisposition"] == content_disposition(done)


async def test_an_attempt_that_lost_its_job_before_recording_its_upload_aborts_it(
    repo: FakeRepository, s3: FakeS3, job: Job
) -> None:
    # Given the job moves on (the sweep reclaimed it) while this attempt reads its first part
    async def copy_rows(claimed: Job, sink: Callable[[bytes], Awaitable[None]]) -> int:
        repo.jobs[claimed.job_id] = replace(repo.jobs[claimed.job_id], status=JobStatus.PENDING)
        await sink(b"x" * PART)
        raise AssertionError("the sink must stop the stream")

    repo.copy_rows_impl = copy_rows
    # When the attempt creates its upload and cannot record it
    assert await exporter(repo, s3).run(job.job_id) is None
    # Then no byte went to S3 and the upload it created is aborted; the job is left alone
    assert s3.called("upload_part") == []
    assert len(s3.called("abort_multipart_upload")) == 1
    assert s3.uploads == {}
    assert repo.jobs[job.job_id].status is JobStatus.PENDING


async def test_a_terminal_failure_after_complete_deletes_the_object(
    repo: FakeRepository, s3: FakeS3, job: Job
) -> None:
    # Given the object is complete but recording success hits a bug
    repo.complete_error = ValueError("bug")
    # When the job runs
    await exporter(repo, s3).run(job.job_id)
    # Then the objects no job points at (data file and manifest) are deleted, and the job is failed
    assert s3.called("delete_object") == [
        {"Bucket": "analytics-exports", "Key": job.object_key},
        {"Bucket": "analytics-exports", "Key": job.manifest_key},
    ]
    assert s3.objects == {}
    assert s3.called("abort_multipart_upload") == []
    assert repo.jobs[job.job_id].status is JobStatus.FAILED


async def test_failure_of_the_tagging_leaves_no_object(repo: FakeRepository, s3: FakeS3, job: Job) -> None:
    # Given the multipart upload completes but tagging it with its checksum (the last S3 step) fails
    s3.errors["put_object_tagging"] = client_error("InternalError", 500, "PutObjectTagging")
    # When the job runs
    await exporter(repo, s3).run(job.job_id)
    # Then the job waits for another attempt and nothing is left in the bucket meanwhile
    assert repo.jobs[job.job_id].status is JobStatus.PENDING
    assert s3.objects == {}, "a completed object of an unfinished job was left in the bucket"


async def test_cleanup_failure_still_fails_the_job(repo: FakeRepository, s3: FakeS3, job: Job) -> None:
    repo.copy_error = RuntimeError("boom")
    s3.errors["abort_multipart_upload"] = client_error("SlowDown", 503, "AbortMultipartUpload")
    failed = await exporter(repo, s3).run(job.job_id)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert "boom" in (failed.error_message or "")


async def test_failure_to_record_the_failure_is_swallowed(repo: FakeRepository, s3: FakeS3, job: Job) -> None:
    repo.copy_error = RetryableStorageError("S3 upload of part 2 failed: SlowDown")
    repo.fail_error = ConnectionResetError("database gone too")
    assert await exporter(repo, s3).run(job.job_id) is None
    assert s3.uploads == {}


async def test_result_of_an_attempt_that_lost_the_job_is_discarded(
    repo: FakeRepository, s3: FakeS3, job: Job
) -> None:
    # Given the job is taken from this attempt while it copies (e.g. reclaimed by another attempt)
    async def copy_then_lose(claimed: Job, sink: Callable[[bytes], Awaitable[None]]) -> int:
        await sink(b"header\n")
        repo.jobs[claimed.job_id] = make_job(job_id=claimed.job_id, status=JobStatus.RUNNING, attempt=2)
        return 0

    repo.copy_rows_impl = copy_then_lose
    # When it finishes, complete finds nothing to update
    assert await exporter(repo, s3).run(job.job_id) is None
    # Then the job belongs to the other attempt untouched
    assert repo.jobs[job.job_id].attempt == 2
    assert repo.jobs[job.job_id].status is JobStatus.RUNNING


async def block_in_copy(repo: FakeRepository) -> asyncio.Event:
    """Make copy_rows send one part and then block; the event is set once it blocks."""
    copying = asyncio.Event()

    async def copy_forever(claimed: Job, sink: Callable[[bytes], Awaitable[None]]) -> int:
        await sink(b"x" * PART)
        copying.set()
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    repo.copy_rows_impl = copy_forever
    return copying


async def test_a_time_limit_cancellation_aborts_retries_and_re_raises(
    repo: FakeRepository, s3: FakeS3, job: Job
) -> None:
    copying = await block_in_copy(repo)
    task = asyncio.create_task(exporter(repo, s3).run(job.job_id))
    await asyncio.wait_for(copying.wait(), timeout=2)
    # When the task is cancelled by the time limit (not a shutdown)
    task.cancel()
    # Then the cancellation propagates, the upload was aborted, and the attempt is charged
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(s3.called("abort_multipart_upload")) == 1
    assert s3.uploads == {}
    assert s3.objects == {}
    assert repo.jobs[job.job_id].status is JobStatus.PENDING
    [(_, reason, _)] = repo.called("retry")
    assert "time limit" in reason


async def test_a_shutdown_hands_the_job_back_without_charging_an_attempt(
    repo: FakeRepository, s3: FakeS3, job: Job
) -> None:
    copying = await block_in_copy(repo)
    worker = exporter(repo, s3)
    task = asyncio.create_task(worker.run(job.job_id))
    await asyncio.wait_for(copying.wait(), timeout=2)
    # When the worker drains and cancels its running exports
    worker.start_draining()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Then the job is pending again, not charged, and its upload is gone
    handed = repo.jobs[job.job_id]
    assert (handed.status, handed.attempt, handed.handbacks, handed.charged_attempts) == (
        JobStatus.PENDING,
        1,
        1,
        0,
    )
    assert repo.called("retry") == []
    assert repo.called("fail") == []
    assert s3.uploads == {}


async def test_a_lost_lease_stops_the_stream_and_leaves_the_job_alone(
    repo: FakeRepository, s3: FakeS3
) -> None:
    # Given a lease so short that the heartbeat runs while the export streams, and another
    # attempt that takes the job meanwhile
    pending = make_job()
    repo.jobs[pending.job_id] = pending

    async def copy_slowly(claimed: Job, sink: Callable[[bytes], Awaitable[None]]) -> int:
        repo.jobs[claimed.job_id] = make_job(job_id=claimed.job_id, status=JobStatus.RUNNING, attempt=2)
        for _ in range(100):
            await sink(b"x" * PART)
            await asyncio.sleep(0.05)
        return 100

    repo.copy_rows_impl = copy_slowly
    settings = replace(Settings(), export_lease_ttl=0.3)
    # When the attempt runs
    assert await exporter(repo, s3, settings).run(pending.job_id) is None
    # Then it stopped streaming once the heartbeat found the job gone, aborted its own upload,
    # and left the other attempt's job untouched
    assert len(s3.called("upload_part")) < 100
    assert s3.uploads == {}
    assert s3.called("complete_multipart_upload") == []
    assert repo.jobs[pending.job_id].attempt == 2
    assert repo.called("fail") == []
    assert repo.called("retry") == []


async def test_a_cancel_stops_the_export_at_the_next_part_and_leaves_nothing(
    repo: FakeRepository, s3: FakeS3
) -> None:
    # Given an export of many parts, and a cancel that arrives while its second part goes out
    pending = make_job()
    repo.jobs[pending.job_id] = pending

    async def copy_many_parts(claimed: Job, sink: Callable[[bytes], Awaitable[None]]) -> int:
        for part in range(50):
            if part == 1:
                repo.jobs[claimed.job_id] = replace(repo.jobs[claimed.job_id], cancel_requested_at=T0)
            await sink(b"x" * PART)
        return 50

    repo.copy_rows_impl = copy_many_parts
    # When the export runs
    cancelled = await exporter(repo, s3).run(pending.job_id)
    # Then it stopped at the part boundary after the cancel, aborted its upload, and is cancelled
    assert cancelled is not None
    assert cancelled.status is JobStatus.CANCELLED
    assert len(s3.called("upload_part")) == 2
    assert s3.uploads == {}
    assert s3.objects == {}
    assert s3.called("complete_multipart_upload") == []
    assert repo.called("fail") == []
