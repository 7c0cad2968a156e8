"""The exporter against real PostgreSQL and a real S3 HTTP server (moto): bytes, checksums, cleanup."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.exporter import Exporter
from service.formats import CONTENT_TYPES, FOCUS_ORDER
from service.job import DatasetSchema, ExportFormat, ExportRequest, Granularity, Job, JobStatus, object_key
from service.repository import JobRepository, create_pool
from service.rollups import DEFAULT_TABLES
from service.settings import Settings
from service.storage import ObjectStore, S3Client, open_s3_client
from tests.conftest import BUCKET, OVERRIDE_BUCKET, OVERRIDE_ORG
from tests.support.rollups import (
    HEADER,
    TRICKY_MODELS,
    Rollup,
    csv_safe,
    daily_from_hourly,
    expected_rows,
    formula_cells,
    hourly_rollups,
    insert,
)

pytestmark = pytest.mark.usefixtures("clean_state")
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class Parts:
    repository: JobRepository
    client: S3Client
    exporter: Exporter
    settings: Settings


@pytest.fixture
async def parts(settings: Settings) -> AsyncIterator[Parts]:
    pool = await create_pool(settings.database_url, max_size=5)
    async with open_s3_client(settings) as client:
        repository = JobRepository(pool, tables=DEFAULT_TABLES)
        store = ObjectStore(client, settings.export_part_size)
        yield Parts(repository, client, Exporter(repository, store, settings), settings)
    await pool.close()


async def seed(
    settings: Settings, org: uuid.UUID, hours: int, models: tuple[str, ...], start: datetime = START
) -> tuple[list, list]:
    """Hourly rollups from ``start`` and the daily ones as their exact sums."""
    hourly = hourly_rollups(org, start, hours, models)
    return hourly, await store(settings, hourly)


async def store(settings: Settings, hourly: list[Rollup]) -> list[Rollup]:
    """Store ``hourly`` and the daily rollups as their exact sums; return the daily ones."""
    daily = daily_from_hourly(hourly)
    conn = await asyncpg.connect(settings.database_url)
    try:
        await insert(conn, "hourly_rollups", hourly)
        await insert(conn, "daily_rollups", daily)
    finally:
        await conn.close()
    return daily


async def read_object(client: S3Client, bucket: str, key: str) -> tuple[bytes, dict]:
    response = await client.get_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
    async with response["Body"] as body:
        return await body.read(), response


async def no_uploads_left(client: S3Client, bucket: str) -> bool:
    listing = await client.list_multipart_uploads(Bucket=bucket)  # type: ignore[attr-defined]
    return not listing.get("Uploads")


async def test_export_streams_exact_rows_and_checksum(parts: Parts) -> None:
    org = uuid.uuid4()
    hourly, _ = await seed(parts.settings, org, 48, TRICKY_MODELS)
    job = (await parts.repository.create(ExportRequest(org, "me", START, END, Granularity.HOURLY, None))).job

    done = await parts.exporter.run(job.job_id)

    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    key = object_key(org, job.job_id)
    assert done.output_uri == f"s3://{BUCKET}/{key}"
    data, response = await read_object(parts.client, BUCKET, key)
    assert hashlib.sha256(data).hexdigest() == done.checksum
    assert done.byte_count == len(data)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    expected = expected_rows(hourly, org_id=org, granularity="hourly", start=START, end=END, models=None)
    assert rows[0] == HEADER
    assert rows[1:] == expected
    assert done.row_count == len(expected)
    assert response["ContentType"] == "text/csv; charset=utf-8"
    assert response["ContentDisposition"].startswith('attachment; filename="')
    assert response["Metadata"]["sha256"] == done.checksum
    assert response["Metadata"]["row-count"] == str(len(expected))
    tagging = await parts.client.get_object_tagging(Bucket=BUCKET, Key=key)  # type: ignore[attr-defined]
    assert {tag["Key"]: tag["Value"] for tag in tagging["TagSet"]} == response["Metadata"]
    # And the manifest beside it is the one the job records, stating the file's facts and its
    # totals, which are the exact sums of the rows in the file
    manifest, _ = await read_object(parts.client, BUCKET, done.manifest_key)
    found = await parts.repository.get_manifest(org, job.job_id)
    assert found is not None
    assert found[1] == manifest
    assert hashlib.sha256(manifest).hexdigest() == done.manifest_checksum
    document = orjson.loads(manifest)
    [entry] = document["files"]
    assert (entry["key"], entry["rows"], entry["bytes"], entry["sha256"]) == (
        key,
        len(expected),
        done.byte_count,
        done.checksum,
    )
    assert document["totals"] == {
        "USD": {
            "costTotal": str(sum((Decimal(row[6]) for row in rows[1:]), Decimal("0.000000"))),
            "requestCount": sum(int(row[3]) for row in rows[1:]),
            "tokensTotal": sum(int(row[4]) for row in rows[1:]),
            "errorCount": sum(int(row[5]) for row in rows[1:]),
        }
    }
    assert await no_uploads_left(parts.client, BUCKET)


async def test_export_larger_than_a_part_is_uploaded_in_several_parts(parts: Parts) -> None:
    org = uuid.uuid4()
    models = tuple(f"model-{i:03d}" for i in range(120))
    await seed(parts.settings, org, 24 * 31, models)  # 89,280 rows, ~10 MiB: at least 2 parts of 5 MiB
    job = (await parts.repository.create(ExportRequest(org, "me", START, END, Granularity.HOURLY, None))).job

    done = await parts.exporter.run(job.job_id)

    assert done is not None
    assert done.row_count == 24 * 31 * len(models)
    data, _ = await read_object(parts.client, BUCKET, object_key(org, job.job_id))
    assert len(data) > parts.settings.export_part_size
    assert hashlib.sha256(data).hexdigest() == done.checksum
    assert data.count(b"\n") == done.row_count + 1
    # And the finished object carries its facts as tags (S3 fixed its metadata before they existed)
    tagging = await parts.client.get_object_tagging(  # type: ignore[attr-defined]
        Bucket=BUCKET, Key=object_key(org, job.job_id)
    )
    assert {tag["Key"]: tag["Value"] for tag in tagging["TagSet"]} == {
        "sha256": done.checksum,
        "byte-count": str(len(data)),
        "row-count": str(done.row_count),
        "job-id": str(job.job_id),
        "org-id": str(org),
    }


async def test_empty_export_is_a_header_only_file(parts: Parts) -> None:
    org = uuid.uuid4()
    job = (
        await parts.repository.create(ExportRequest(org, "me", START, END, Granularity.MONTHLY, ("none",)))
    ).job

    done = await parts.exporter.run(job.job_id)

    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    assert done.row_count == 0
    data, _ = await read_object(parts.client, BUCKET, object_key(org, job.job_id))
    assert data == (",".join(HEADER) + "\n").encode()
    assert done.checksum == hashlib.sha256(data).hexdigest()


async def test_org_override_bucket_is_used(parts: Parts) -> None:
    job = (
        await parts.repository.create(ExportRequest(OVERRIDE_ORG, "me", START, END, Granularity.DAILY, None))
    ).job

    done = await parts.exporter.run(job.job_id)

    assert done is not None
    assert done.output_uri == f"s3://{OVERRIDE_BUCKET}/{object_key(OVERRIDE_ORG, job.job_id)}"
    data, _ = await read_object(parts.client, OVERRIDE_BUCKET, object_key(OVERRIDE_ORG, job.job_id))
    assert hashlib.sha256(data).hexdigest() == done.checksum


async def test_duplicate_run_does_nothing(parts: Parts) -> None:
    org = uuid.uuid4()
    job = (await parts.repository.create(ExportRequest(org, "me", START, END, Granularity.DAILY, None))).job
    first = await parts.exporter.run(job.job_id)
    assert first is not None

    assert await parts.exporter.run(job.job_id) is None

    again = await parts.repository.get(org, job.job_id)
    assert again == first


async def test_missing_bucket_fails_the_job_readably_and_leaves_nothing(parts: Parts) -> None:
    org = uuid.uuid4()
    await seed(parts.settings, org, 24, ("m",))
    broken = Exporter(
        parts.repository,
        ObjectStore(parts.client, parts.settings.export_part_size),
        replace(parts.settings, s3_bucket="no-such-bucket-here"),
    )
    job = (await parts.repository.create(ExportRequest(org, "me", START, END, Granularity.HOURLY, None))).job

    failed = await broken.run(job.job_id)

    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert failed.error_message is not None
    assert "NoSuchBucket" in failed.error_message
    assert failed.output_uri is None
    assert await no_uploads_left(parts.client, BUCKET)


async def test_database_failure_mid_stream_aborts_the_upload(parts: Parts, settings: Settings) -> None:
    org = uuid.uuid4()
    await seed(settings, org, 24, ("m",))
    conn = await asyncpg.connect(settings.database_url)
    try:
        # Given a table the export query cannot read (privileges would do too; a dropped table is simplest)
        await conn.execute("ALTER TABLE analytics.hourly_rollups RENAME TO hourly_rollups_away")
        job = (
            await parts.repository.create(ExportRequest(org, "me", START, END, Granularity.HOURLY, None))
        ).job

        failed = await parts.exporter.run(job.job_id)
    finally:
        await conn.execute("ALTER TABLE analytics.hourly_rollups_away RENAME TO hourly_rollups")
        await conn.close()

    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert "hourly_rollups" in (failed.error_message or "")
    assert await no_uploads_left(parts.client, BUCKET)
    listing = await parts.client.list_objects_v2(Bucket=BUCKET)  # type: ignore[attr-defined]
    assert listing.get("KeyCount", 0) == 0


async def test_formula_cells_are_neutralised_and_negative_costs_stay_numbers(parts: Parts) -> None:
    # Given rollups whose model ids try formula injection, one with a negative cost (a credit)
    org = uuid.uuid4()
    conn = await asyncpg.connect(parts.settings.database_url)
    try:
        await conn.executemany(
            "INSERT INTO analytics.daily_rollups VALUES ('2026-10-02T00:00:00Z', $1, $2, 1, 2, 0, $3, 'USD')",
            [
                (org, '=HYPERLINK("http://evil","x")', "-1.5"),
                (org, "-negative-id", "2"),
                (org, "plain", "-0.25"),
                (org, " =1+1", "1"),  # behind a space
                (org, "a;=cmd|' /C calc'!A0", "1"),  # a cell of its own in a ';' spreadsheet
                (org, "b\t@SUM(1)", "1"),  # ... or a tab-separated one
                (org, "c, +1", "1"),
            ],
        )
    finally:
        await conn.close()
    job = (await parts.repository.create(ExportRequest(org, "me", START, END, Granularity.DAILY, None))).job

    done = await parts.exporter.run(job.job_id)

    assert done is not None
    data, _ = await read_object(parts.client, BUCKET, object_key(org, job.job_id))
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]
    # Then every formula character a spreadsheet could start a cell with gets a quote before it;
    # numbers are untouched
    assert [(r[2], r[6]) for r in rows] == [
        ("' =1+1", "1.000000"),
        ("'-negative-id", "2.000000"),
        ('\'=HYPERLINK("http://evil","x")', "-1.500000"),
        ("a;'=cmd|' /C calc'!A0", "1.000000"),
        ("b\t'@SUM(1)", "1.000000"),
        ("c, '+1", "1.000000"),
        ("plain", "-0.250000"),
    ]
    # And split on any list separator, no text cell reads as a formula
    assert [formula_cells(r[2]) for r in rows] == [[]] * len(rows)


async def test_overlapped_part_uploads_give_the_same_exact_object(parts: Parts) -> None:
    # Given a multi-part export, run with three part uploads allowed on their way at once
    org = uuid.uuid4()
    await seed(parts.settings, org, 24 * 31, tuple(f"model-{i:03d}" for i in range(120)))
    store = ObjectStore(parts.client, parts.settings.export_part_size, parts_in_flight=3)
    exporter = Exporter(parts.repository, store, parts.settings)
    job = (await parts.repository.create(ExportRequest(org, "me", START, END, Granularity.HOURLY, None))).job

    done = await exporter.run(job.job_id)

    # Then the object is byte for byte what the checksum says, in order, and nothing is left over
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    data, _ = await read_object(parts.client, BUCKET, object_key(org, job.job_id))
    assert hashlib.sha256(data).hexdigest() == done.checksum
    assert data.count(b"\n") == done.row_count + 1
    assert await no_uploads_left(parts.client, BUCKET)


@pytest.mark.parametrize("granularity", [Granularity.HOURLY, Granularity.DAILY, Granularity.MONTHLY])
@pytest.mark.parametrize(
    ("start", "end"),
    [
        # hour-aligned, not day-aligned: partial days at both edges, and a month edge inside
        (datetime(2026, 10, 30, 5, tzinfo=UTC), datetime(2026, 11, 2, 19, tzinfo=UTC)),
        # starting and ending inside an hour: the partial hours at both ends are not counted
        (datetime(2026, 10, 30, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 2, 45, tzinfo=UTC)),
        # inside one day
        (datetime(2026, 11, 1, 3, tzinfo=UTC), datetime(2026, 11, 1, 9, 15, tzinfo=UTC)),
    ],
    ids=["hour-aligned", "mid-hour", "one-day"],
)
async def test_an_export_counts_exactly_the_whole_hours_inside_its_range(
    parts: Parts, granularity: Granularity, start: datetime, end: datetime
) -> None:
    # Given hourly rollups over October and November 2026 (and daily ones, their exact sums)
    org = uuid.uuid4()
    first = datetime(2026, 10, 28, tzinfo=UTC)
    hourly, _ = await seed(parts.settings, org, 24 * 8, ("gpt-4o", "claude-haiku"), first)
    job = (await parts.repository.create(ExportRequest(org, "me", start, end, granularity, None))).job

    done = await parts.exporter.run(job.job_id)

    # Then the file holds exactly the hours wholly inside [start, end), bucketed by granularity,
    # and its totals equal those hours' totals to the micro-unit
    assert done is not None
    data, _ = await read_object(parts.client, BUCKET, object_key(org, job.job_id))
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]
    assert rows == expected_rows(
        hourly, org_id=org, granularity=granularity.value, start=start, end=end, models=None
    )
    inside = [r for r in hourly if job.coverage.start <= r.bucket_start < job.coverage.end]
    assert sum(Decimal(row[6]) for row in rows) == sum(r.cost_total for r in inside)
    assert sum(int(row[3]) for row in rows) == sum(r.request_count for r in inside)
    # and the bucket_start of a partly covered day or month is the bucket's own start
    assert all(row[0].endswith("T00:00:00Z") for row in rows) or granularity is Granularity.HOURLY


async def zoned_export(
    parts: Parts,
    org: uuid.UUID,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    time_zone: str = "Europe/Berlin",
) -> list[list[str]]:
    request = ExportRequest(org, "me", start, end, granularity, None, time_zone=time_zone)
    job = (await parts.repository.create(request)).job
    assert await parts.exporter.run(job.job_id) is not None
    data, _ = await read_object(parts.client, BUCKET, object_key(org, job.job_id))
    return list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]


@pytest.mark.parametrize(
    ("first_day", "day", "hours", "offsets"),
    [
        (datetime(2026, 10, 23, tzinfo=UTC), "2026-10-25", 25, ("+02:00", "+02:00", "+01:00")),
        (datetime(2026, 3, 27, tzinfo=UTC), "2026-03-29", 23, ("+01:00", "+01:00", "+02:00")),
    ],
    ids=["October, 25 hours", "March, 23 hours"],
)
async def test_berlin_days_are_local_days_with_their_daylight_saving_hours(
    parts: Parts, first_day: datetime, day: str, hours: int, offsets: tuple[str, str, str]
) -> None:
    # Given hourly rollups around a daylight-saving change in Berlin (and daily ones in UTC days)
    org = uuid.uuid4()
    hourly, _ = await seed(parts.settings, org, 24 * 5, ("gpt-4o",), first_day)
    berlin = ZoneInfo("Europe/Berlin")
    local = datetime.fromisoformat(day).replace(tzinfo=berlin)
    start, end = local - timedelta(days=1), local + timedelta(days=2)
    # When the three local days around the change are exported daily in Europe/Berlin
    rows = await zoned_export(parts, org, start, end, Granularity.DAILY)
    # Then each row is a local day, written with that midnight's offset, and the day of the change
    # sums exactly its 25 (or 23) hours
    assert [row[0] for row in rows] == [
        f"{(local + timedelta(days=n)).date()}T00:00:00{offset}"
        for n, offset in zip((-1, 0, 1), offsets, strict=True)
    ]
    midnight, next_midnight = local.astimezone(UTC), (local + timedelta(days=1)).astimezone(UTC)
    that_day = [r for r in hourly if midnight <= r.bucket_start < next_midnight]
    assert len(that_day) == hours
    assert (int(rows[1][3]), Decimal(rows[1][6])) == (
        sum(r.request_count for r in that_day),
        sum(r.cost_total for r in that_day),
    )
    # And hourly rows carry the offset of their own instant
    hourly_rows = await zoned_export(parts, org, start, end, Granularity.HOURLY)
    assert hourly_rows[0][0] == f"{start.date()}T00:00:00{offsets[0]}"
    assert len(hourly_rows) == 24 + hours + 24


#: How a bucket_start begins, by granularity: the local hour, day or month.
BUCKET_PREFIX = {
    Granularity.HOURLY: "%Y-%m-%dT%H",
    Granularity.DAILY: "%Y-%m-%d",
    Granularity.MONTHLY: "%Y-%m",
}


def totals_by_currency(cells: list[tuple[str, Decimal]]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for currency, cost in cells:
        totals[currency] = totals.get(currency, Decimal(0)) + cost
    return totals


@pytest.mark.parametrize("granularity", [Granularity.HOURLY, Granularity.DAILY, Granularity.MONTHLY])
@pytest.mark.parametrize("time_zone", ["UTC", "Europe/Berlin"])
async def test_two_currencies_of_one_org_are_never_summed_together(
    parts: Parts, granularity: Granularity, time_zone: str
) -> None:
    # Given an org whose billing currency changes from USD to EUR at noon on 2026-10-15 (the hour
    # of the change has usage in both), and one model billed in GBP throughout
    org = uuid.uuid4()
    switch = datetime(2026, 10, 15, 12, tzinfo=UTC)
    usage = hourly_rollups(
        org, datetime(2026, 10, 13, tzinfo=UTC), 24 * 5, ("gpt-4o", "claude-haiku", "embed-v3")
    )
    hourly = [
        replace(
            r, currency="GBP" if r.model_id == "embed-v3" else ("USD" if r.bucket_start < switch else "EUR")
        )
        for r in usage
    ]
    hourly += [replace(r, currency="USD") for r in hourly if r.bucket_start == switch and r.currency == "EUR"]
    await store(parts.settings, hourly)
    start, end = datetime(2026, 10, 13, 5, tzinfo=UTC), datetime(2026, 10, 17, 19, tzinfo=UTC)
    # When it is exported
    rows = await zoned_export(parts, org, start, end, granularity, time_zone)
    # Then every row is of one currency, and each currency's total is exactly that currency's usage
    inside = [r for r in hourly if start <= r.bucket_start < end]
    assert totals_by_currency([(row[7], Decimal(row[6])) for row in rows]) == totals_by_currency(
        [(r.currency, r.cost_total) for r in inside]
    )
    assert {row[7] for row in rows} == {"USD", "EUR", "GBP"}
    # and a bucket and model holds one row per currency used in it: in the bucket of the change,
    # gpt-4o has a USD row and an EUR row
    keys = [(row[0], row[2], row[7]) for row in rows]
    assert len(keys) == len(set(keys))
    bucket = switch.astimezone(ZoneInfo(time_zone)).strftime(BUCKET_PREFIX[granularity])
    assert sorted(row[7] for row in rows if row[0].startswith(bucket) and row[2] == "gpt-4o") == [
        "EUR",
        "USD",
    ]
    if time_zone == "UTC":
        assert rows == expected_rows(
            hourly, org_id=org, granularity=granularity.value, start=start, end=end, models=None
        )


async def export_as(
    parts: Parts, org: uuid.UUID, output_format: ExportFormat, **request: object
) -> tuple[Job, bytes, dict[str, object]]:
    """Run an export of October 2026 in ``output_format``; the job, its file and its manifest."""
    fields: dict[str, object] = {"granularity": Granularity.HOURLY, "time_zone": "UTC", **request}
    job = (
        await parts.repository.create(
            ExportRequest(org, "me", START, END, models=None, output_format=output_format, **fields)  # type: ignore[arg-type]
        )
    ).job
    done = await parts.exporter.run(job.job_id)
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED, done.error_message
    data, response = await read_object(parts.client, BUCKET, done.object_key)
    assert response["ContentType"] == CONTENT_TYPES[output_format]
    assert response["ContentDisposition"].endswith(f'.{output_format.value}"')
    manifest, _ = await read_object(parts.client, BUCKET, done.manifest_key)
    return done, data, orjson.loads(manifest)


@pytest.mark.parametrize(
    ("granularity", "time_zone"), [(Granularity.HOURLY, "UTC"), (Granularity.DAILY, "Europe/Berlin")]
)
async def test_every_format_holds_the_same_rows_and_totals(
    parts: Parts, granularity: Granularity, time_zone: str
) -> None:
    # Given rollups with tricky model ids, credits and two currencies
    org = uuid.uuid4()
    hourly = [
        replace(r, currency="EUR" if r.model_id == "alpha" else "USD")
        for r in hourly_rollups(org, START, 72, TRICKY_MODELS)
    ]
    await store(parts.settings, hourly)
    # When the same request is exported in each format
    request = {"granularity": granularity, "time_zone": time_zone}
    _, csv_data, csv_manifest = await export_as(parts, org, ExportFormat.CSV, **request)
    gz_job, gz_data, gz_manifest = await export_as(parts, org, ExportFormat.CSV_GZ, **request)
    pq_job, pq_data, pq_manifest = await export_as(parts, org, ExportFormat.PARQUET, **request)
    # Then csv.gz is exactly the CSV, compressed, and its manifest says so
    assert gzip.decompress(gz_data) == csv_data
    [gz_entry] = gz_manifest["files"]  # type: ignore[misc]
    assert gz_entry["contentEncoding"] == "gzip"
    assert gz_entry["uncompressed"] == {
        "bytes": len(csv_data),
        "sha256": hashlib.sha256(csv_data).hexdigest(),
    }
    assert (gz_entry["bytes"], gz_entry["sha256"]) == (len(gz_data), gz_job.checksum)
    assert len(gz_data) * 3 < len(csv_data)
    # And Parquet holds the same rows, typed: exact decimals, instants in the zone, ids as recorded
    table = pq.read_table(io.BytesIO(pq_data))
    assert str(table.schema.field("cost_total").type) == "decimal128(20, 6)"
    assert table.schema.field("bucket_start").type == pa.timestamp("us", tz=time_zone)
    csv_rows = list(csv.DictReader(io.StringIO(csv_data.decode(), newline="")))
    parquet_rows = table.to_pylist()
    assert len(parquet_rows) == len(csv_rows) == pq_job.row_count
    for text, typed in zip(csv_rows, parquet_rows, strict=True):
        assert typed["bucket_start"] == datetime.fromisoformat(text["bucket_start"])
        assert typed["bucket_start"].isoformat().replace("+00:00", "Z") == text["bucket_start"]
        assert csv_safe(typed["model_id"]) == text["model_id"]
        assert typed["cost_total"] == Decimal(text["cost_total"])
        assert (typed["request_count"], typed["currency"]) == (int(text["request_count"]), text["currency"])
    assert any(row["model_id"] != csv_safe(row["model_id"]) for row in parquet_rows)
    # And every manifest states the same totals, per currency
    assert csv_manifest["totals"] == gz_manifest["totals"] == pq_manifest["totals"]
    assert set(csv_manifest["totals"]) == {"EUR", "USD"}  # type: ignore[arg-type]


@pytest.mark.parametrize("granularity", [Granularity.HOURLY, Granularity.DAILY, Granularity.MONTHLY])
async def test_the_focus_dataset_holds_the_same_usage_as_focus_columns(
    parts: Parts, granularity: Granularity
) -> None:
    # Given rollups in two currencies over the end of October, and a range that starts and ends
    # inside a day
    org = uuid.uuid4()
    first = datetime(2026, 10, 30, tzinfo=UTC)
    hourly = [
        replace(r, currency="EUR" if r.model_id == "alpha" else "USD")
        for r in hourly_rollups(org, first, 24 * 3, ("alpha", "gpt-4o", "multi\nline"))
    ]
    await store(parts.settings, hourly)
    start, end = datetime(2026, 10, 30, 6, tzinfo=UTC), datetime(2026, 11, 1, 18, tzinfo=UTC)
    # When the range is exported as FOCUS
    request = ExportRequest(org, "me", start, end, granularity, None, output_schema=DatasetSchema.FOCUS_1_0)
    job = (await parts.repository.create(request)).job
    done = await parts.exporter.run(job.job_id)
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED, done.error_message
    data, _ = await read_object(parts.client, BUCKET, done.object_key)
    reader = csv.DictReader(io.StringIO(data.decode(), newline=""))
    rows = list(reader)
    # Then its columns are FOCUS 1.0's (ratified names) with our two custom ones, in one order
    assert reader.fieldnames == FOCUS_ORDER
    # And its totals per currency are exactly the native export's: the covered hours
    inside = [r for r in hourly if start <= r.bucket_start < end]
    for currency in ("EUR", "USD"):
        mine = [row for row in rows if row["BillingCurrency"] == currency]
        theirs = [r for r in inside if r.currency == currency]
        assert sum(Decimal(row["BilledCost"]) for row in mine) == sum(r.cost_total for r in theirs)
        assert sum(int(row["x_RequestCount"]) for row in mine) == sum(r.request_count for r in theirs)
        assert sum(Decimal(row["ConsumedQuantity"]) for row in mine) == sum(r.tokens_total for r in theirs)
    for row in rows:
        # charge periods are the covered part of each bucket, in UTC; billing periods their month
        charge_start = datetime.fromisoformat(row["ChargePeriodStart"])
        charge_end = datetime.fromisoformat(row["ChargePeriodEnd"])
        assert start <= charge_start < charge_end <= end
        assert row["BillingPeriodStart"] == f"{charge_start:%Y-%m}-01T00:00:00Z"
        assert row["ChargePeriodStart"].endswith("Z")
        # every cost column is the exact cost; quantities are exact decimals
        assert row["BilledCost"] == row["EffectiveCost"] == row["ListCost"] == row["ContractedCost"]
        assert Decimal(row["PricingQuantity"]) * 1_000_000 == Decimal(row["ConsumedQuantity"])
        assert (row["ChargeCategory"], row["ChargeFrequency"], row["ChargeClass"]) == (
            "Usage",
            "Usage-Based",
            "",
        )
        assert row["ProviderName"] == parts.settings.focus_provider_name
        assert row["SkuId"] in {"alpha", "gpt-4o", "multi\nline"}
    if granularity is Granularity.DAILY:
        assert rows[0]["ChargePeriodStart"] == "2026-10-30T06:00:00Z"
        assert rows[0]["ChargePeriodEnd"] == "2026-10-31T00:00:00Z"
    if granularity is Granularity.MONTHLY:
        assert {(row["ChargePeriodStart"], row["ChargePeriodEnd"]) for row in rows} == {
            ("2026-10-30T06:00:00Z", "2026-11-01T00:00:00Z"),
            ("2026-11-01T00:00:00Z", "2026-11-01T18:00:00Z"),
        }
    # And the manifest's totals are the same ones
    manifest, _ = await read_object(parts.client, BUCKET, done.manifest_key)
    totals = orjson.loads(manifest)["totals"]
    assert Decimal(totals["USD"]["costTotal"]) == sum(r.cost_total for r in inside if r.currency == "USD")
