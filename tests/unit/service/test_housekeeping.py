"""Housekeeper: expiry (object first, then the job), re-publishing stale pending jobs, and rollup
retention in bounded batches."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from service.housekeeping import UNCLAIMED_AFTER_SECONDS, UNPUBLISHED_AFTER_SECONDS, Housekeeper, SweepReport
from service.job import JobStatus
from service.metrics import ExportMetrics
from service.retention import PRUNE_GRACE, RollupTable
from service.settings import Settings
from service.storage import ObjectStore
from tests.support.fakes import FakeQueue, FakeRepository, FakeS3, client_error, make_job, succeeded_job


def housekeeper(repo: FakeRepository, s3: FakeS3, settings: Settings | None = None) -> Housekeeper:
    store = ObjectStore(s3, 8 * 1024 * 1024, retry_window=0)
    return Housekeeper(repo, store, settings or Settings(rollup_prune=True))  # type: ignore[arg-type]


async def test_expire_due_deletes_the_object_then_expires_the_job(repo: FakeRepository, s3: FakeS3) -> None:
    # Given one succeeded job the repository finds past its expiry (its object in the bucket), and
    # one still valid
    due = succeeded_job(expires_in=-timedelta(minutes=1))
    valid = succeeded_job(expires_in=timedelta(hours=1))
    repo.jobs.update({due.job_id: due, valid.job_id: valid})
    repo.due = [due]
    s3.objects[("analytics-exports", due.object_key)] = {"Body": b"csv"}
    s3.objects[("analytics-exports", due.manifest_key)] = {"Body": b"{}"}
    # When the sweep runs
    expired = await housekeeper(repo, s3).expire_due()
    # Then only the due job's objects (data file, then manifest) are deleted and the job expired,
    # in that order
    assert expired == 1
    assert s3.called("delete_object") == [
        {"Bucket": "analytics-exports", "Key": due.object_key},
        {"Bucket": "analytics-exports", "Key": due.manifest_key},
    ]
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
    repo.due = [due]
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
    repo.due = [stuck, fine]

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
    repo.due = [due]
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
    # Given the repository finds two running jobs whose workers died: one it puts back to pending
    # (attempts left), one it fails (its last attempt)
    retry = make_job(status=JobStatus.RUNNING, attempt=1)
    last = make_job(status=JobStatus.FAILED, attempt=3, error_message="gave up after 3 attempts")
    repo.lapsed_requeued = [retry.job_id]
    repo.lapsed_failed = [last]
    # When the sweep runs
    report = await housekeeper(repo, s3).sweep(queue)
    # Then it reports both, having asked with the configured attempt budget
    assert (report.requeued, report.failed) == (1, 1)
    max_attempts = Settings().export_max_attempts
    assert repo.called("requeue_lapsed")[0][0] == repo.called("fail_lapsed")[0][0] == max_attempts


async def test_sweep_cleans_up_after_failed_jobs(repo: FakeRepository, queue: FakeQueue, s3: FakeS3) -> None:
    # Given a failed job whose upload could not be aborted at the time, and a stray object at its key
    store = ObjectStore(s3, 8 * 1024 * 1024, retry_window=0)
    failed = make_job(status=JobStatus.FAILED)
    key = f"analytics/exports/{failed.org_id}/{failed.job_id}.csv"
    upload = await store.start_upload("analytics-exports", key, "attachment")
    s3.objects[("analytics-exports", key)] = {"Body": b"partial"}
    repo.leftovers = [replace(failed, upload_id=upload.upload_id)]
    # When the sweep runs
    report = await housekeeper(repo, s3).sweep(queue)
    # Then the upload is aborted, the object deleted, and the job told it points at no upload
    assert report.cleaned == 1
    assert s3.uploads == {}
    assert s3.objects == {}
    assert repo.called("clear_upload_id") == [(failed.job_id, upload.upload_id)]


async def test_sweep_keeps_a_leftover_it_could_not_clean(
    repo: FakeRepository, queue: FakeQueue, s3: FakeS3
) -> None:
    failed = make_job(status=JobStatus.FAILED, upload_id="u-1")
    repo.leftovers = [failed]
    s3.errors["abort_multipart_upload"] = client_error("SlowDown", 503, "AbortMultipartUpload")
    report = await housekeeper(repo, s3).sweep(queue)
    assert report.cleaned == 0
    assert repo.called("clear_upload_id") == []  # still recorded: tried again next sweep


async def test_sweep_aborts_old_unrecorded_uploads_in_every_bucket(
    repo: FakeRepository, queue: FakeQueue, s3: FakeS3
) -> None:
    store = ObjectStore(s3, 8 * 1024 * 1024, retry_window=0)
    orphan = await store.start_upload("analytics-exports", "analytics/exports/x/y.csv", "attachment")
    young = await store.start_upload("analytics-exports", "analytics/exports/x/z.csv", "attachment")
    running = make_job(status=JobStatus.RUNNING)
    repo.unfinished = {running.job_id}
    key = f"analytics/exports/{running.org_id}/{running.job_id}.csv"
    recorded = await store.start_upload("analytics-exports", key, "attachment")
    for upload in (orphan, recorded):
        s3.uploads[upload.upload_id]["Initiated"] -= timedelta(hours=3)
    report = await housekeeper(repo, s3).sweep(queue)
    # The old upload of no unfinished job is aborted; the young one and the running job's stay
    assert report.aborted == 1
    assert set(s3.uploads) == {young.upload_id, recorded.upload_id}


# --- rollup retention ---------------------------------------------------------------------------

#: With 13 months of retention (the default), a clock at this instant puts the cutoff at
#: 2025-10-29T12:00:00Z.
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
#: A prune tick one grace period after NOW deletes what the API refused at NOW: before CUTOFF.
TICK = NOW + PRUNE_GRACE
CUTOFF = datetime(2025, 10, 29, 12, tzinfo=UTC)


def rollups_around_cutoff(old: int, new: int) -> list[datetime]:
    """``old`` bucket starts before CUTOFF (the newest 1 µs before it), and ``new`` from CUTOFF on."""
    before = [CUTOFF - timedelta(microseconds=1)] + [CUTOFF - timedelta(hours=h) for h in range(1, old)]
    return before[:old] + [CUTOFF + timedelta(hours=h) for h in range(new)]


async def test_prune_deletes_rows_before_the_cutoff_in_batches_from_every_table(
    repo: FakeRepository, s3: FakeS3
) -> None:
    # Given 25 hourly and 7 daily rows before the cutoff, and 5 of each from the cutoff on
    repo.rollups[RollupTable.HOURLY] = rollups_around_cutoff(25, 5)
    repo.rollups[RollupTable.DAILY] = rollups_around_cutoff(7, 5)
    # When a tick prunes 10 rows per statement
    deleted = await housekeeper(repo, s3).prune_rollups(TICK, batch=10, pause=0)
    # Then every old row is gone, every newer one kept (the one exactly at the cutoff included)
    assert deleted == 32
    for table in RollupTable:
        assert repo.rollups[table] == [CUTOFF + timedelta(hours=h) for h in range(5)]
    # And each table was pruned until a statement found fewer than a batch, with the API's cutoff
    assert repo.called("prune_rollups") == [
        (RollupTable.HOURLY, CUTOFF, 10),
        (RollupTable.HOURLY, CUTOFF, 10),
        (RollupTable.HOURLY, CUTOFF, 10),
        (RollupTable.DAILY, CUTOFF, 10),
    ]


async def test_prune_with_nothing_to_delete_is_one_statement_per_table_and_logs_nothing(
    repo: FakeRepository, s3: FakeS3, caplog: pytest.LogCaptureFixture
) -> None:
    repo.rollups[RollupTable.HOURLY] = rollups_around_cutoff(0, 3)
    with caplog.at_level(logging.INFO, logger="service.housekeeping"):
        assert await housekeeper(repo, s3).prune_rollups(TICK) == 0
    assert repo.called("prune_rollups") == [(table, CUTOFF, 10_000) for table in RollupTable]
    assert caplog.records == []


async def test_one_tick_is_capped_and_the_next_goes_on(repo: FakeRepository, s3: FakeS3) -> None:
    # Given a backlog of 50 old hourly rows
    repo.rollups[RollupTable.HOURLY] = rollups_around_cutoff(50, 2)
    sweeper = housekeeper(repo, s3)
    # When a tick may run at most 3 statements of 10 rows per table
    assert await sweeper.prune_rollups(TICK, batch=10, max_batches=3, pause=0) == 30
    # Then 20 old rows wait for the next tick, which finishes them
    assert len(repo.rollups[RollupTable.HOURLY]) == 22
    assert await sweeper.prune_rollups(TICK, batch=10, max_batches=3, pause=0) == 20
    assert repo.rollups[RollupTable.HOURLY] == [CUTOFF, CUTOFF + timedelta(hours=1)]


async def test_prune_pauses_between_statements_only(
    repo: FakeRepository, s3: FakeS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr("service.housekeeping.asyncio.sleep", sleep)
    repo.rollups[RollupTable.HOURLY] = rollups_around_cutoff(25, 0)
    await housekeeper(repo, s3).prune_rollups(TICK, batch=10, pause=0.25)
    # Three hourly statements, one daily: a pause between the hourly ones, none after the last
    assert pauses == [0.25, 0.25]


async def test_prune_logs_the_count_and_the_cutoff(
    repo: FakeRepository, s3: FakeS3, caplog: pytest.LogCaptureFixture
) -> None:
    repo.rollups[RollupTable.HOURLY] = rollups_around_cutoff(4, 1)
    repo.rollups[RollupTable.DAILY] = rollups_around_cutoff(2, 1)
    with caplog.at_level(logging.INFO, logger="service.housekeeping"):
        await housekeeper(repo, s3).prune_rollups(TICK, pause=0)
    [record] = caplog.records
    assert record.getMessage() == "pruned rollups"
    assert (record.deleted, record.hourly_rollups, record.daily_rollups) == (6, 4, 2)  # type: ignore[attr-defined]
    assert record.cutoff == "2025-10-29T12:00:00Z"  # type: ignore[attr-defined]
    assert record.capped is False  # type: ignore[attr-defined]


async def test_prune_uses_the_configured_retention(repo: FakeRepository, s3: FakeS3) -> None:
    store = ObjectStore(s3, 8 * 1024 * 1024, retry_window=0)
    sweeper = Housekeeper(repo, store, Settings(data_retention_months=2, rollup_prune=True))  # type: ignore[arg-type]
    await sweeper.prune_rollups(TICK)
    assert {args[1] for args in repo.called("prune_rollups")} == {datetime(2026, 9, 29, 12, tzinfo=UTC)}


async def test_every_tick_and_what_it_did_is_counted(repo: FakeRepository, s3: FakeS3) -> None:
    # Given a housekeeper with metrics, one expired export and one lapsed lease on its last attempt
    metrics = ExportMetrics()
    store = ObjectStore(s3, 8 * 1024 * 1024, retry_window=0)  # type: ignore[arg-type]
    keeper = Housekeeper(repo, store, Settings(), metrics)  # type: ignore[arg-type]
    due = succeeded_job(expires_in=-timedelta(minutes=1))
    lapsed = make_job(
        status=JobStatus.RUNNING,
        attempt=Settings().export_max_attempts,
        lease_expires_at=datetime.now(UTC) - timedelta(minutes=1),
        started_at=datetime.now(UTC) - timedelta(minutes=5),
    )
    repo.jobs[due.job_id] = due
    repo.due = [due]
    repo.lapsed_failed = [replace(lapsed, status=JobStatus.FAILED)]
    # When each tick runs once
    await keeper.expire_due()
    await keeper.sweep(FakeQueue())
    await keeper.prune_rollups(pause=0)

    # Then the ticks, the expiry and the sweep's final failure are counted
    def sample(name: str, **labels: str) -> float:
        value = metrics.registry.get_sample_value(name, labels)
        assert value is not None, (name, labels)
        return value

    assert [sample("exports_housekeeping_ticks_total", tick=t) for t in ("expire", "sweep", "prune")] == [
        1,
        1,
        1,
    ]
    assert sample("exports_housekeeping_actions_total", action="expired") == 1
    assert sample("exports_housekeeping_actions_total", action="failed") == 1
    assert sample("exports_jobs_finished_total", status="failed") == 1


async def test_rollups_are_not_pruned_unless_this_service_owns_them(repo: FakeRepository, s3: FakeS3) -> None:
    # The platform's rollup tables (ROLLUP_PRUNE unset): the tick deletes none of their rows
    repo.rollups[RollupTable.HOURLY] = rollups_around_cutoff(25, 5)
    assert await housekeeper(repo, s3, Settings()).prune_rollups(TICK, batch=10, pause=0) == 0
    assert repo.called("prune_rollups") == []
    assert len(repo.rollups[RollupTable.HOURLY]) == 30
