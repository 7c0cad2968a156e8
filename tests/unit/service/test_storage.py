"""The S3 port over a fake client: multipart buffering, checksums, metadata, error classification."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from datetime import timedelta

import pytest
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from service import storage
from service.errors import RetryableStorageError, StorageError, TerminalStorageError
from service.storage import (
    CSV_CONTENT_TYPE,
    MultipartUpload,
    ObjectStore,
    parse_s3_uri,
    s3_uri,
    storage_error,
)
from tests.support.fakes import FakeS3, client_error

BUCKET = "analytics-exports"
KEY = "analytics/exports/org/job.csv"
DISPOSITION = 'attachment; filename="export.csv"'
PART = 10


async def start(s3: FakeS3, part_size: int = PART) -> MultipartUpload:
    return await ObjectStore(s3, part_size, retry_window=0).start_upload(BUCKET, KEY, DISPOSITION)


def part_bodies(s3: FakeS3) -> list[bytes]:
    return [bytes(call["Body"]) for call in s3.called("upload_part")]


async def test_start_upload_creates_a_csv_multipart_upload(s3: FakeS3) -> None:
    upload = await start(s3)
    [create] = s3.called("create_multipart_upload")
    assert create["Bucket"] == BUCKET
    assert create["Key"] == KEY
    assert create["ContentType"] == CSV_CONTENT_TYPE
    assert create["ContentDisposition"] == DISPOSITION
    assert upload.upload_id in s3.uploads
    assert (upload.bucket, upload.key) == (BUCKET, KEY)


async def test_write_buffers_until_a_part_is_full(s3: FakeS3) -> None:
    # Given a part size of 10 bytes
    upload = await start(s3)
    # When less than a part is written, nothing is sent
    await upload.write(b"abcd")
    await upload.write(b"efg")
    assert s3.called("upload_part") == []
    # When the buffer reaches the part size, one part carrying all buffered bytes is sent
    await upload.write(b"hijkl")
    assert part_bodies(s3) == [b"abcdefghijkl"]
    assert s3.called("upload_part")[0]["PartNumber"] == 1
    assert s3.called("upload_part")[0]["UploadId"] == upload.upload_id
    # And the next bytes start a new part
    await upload.write(b"0123456789")
    assert part_bodies(s3) == [b"abcdefghijkl", b"0123456789"]
    assert [c["PartNumber"] for c in s3.called("upload_part")] == [1, 2]


async def test_complete_sends_the_last_small_part_and_lists_every_part(s3: FakeS3) -> None:
    upload = await start(s3)
    chunks = [b"header,row\n", b"2026-11-01T00:00:00Z,0.000123\n", b"tail"]
    for chunk in chunks:
        await upload.write(chunk)
    result = await upload.complete({"job-id": "j1"})

    # The last (small) part was uploaded, and the parts joined are exactly the bytes written
    data = b"".join(chunks)
    assert b"".join(part_bodies(s3)) == data
    assert part_bodies(s3)[-1] == b"tail"
    [complete] = s3.called("complete_multipart_upload")
    assert complete["UploadId"] == upload.upload_id
    listed = complete["MultipartUpload"]["Parts"]
    assert [p["PartNumber"] for p in listed] == list(range(1, len(part_bodies(s3)) + 1))
    # (the fake S3 also checks each listed ETag is the one its part was given)
    assert all(p["ETag"] for p in listed)
    assert s3.objects[(BUCKET, KEY)]["Body"] == data
    assert result.parts == 3
    assert result.byte_count == len(data)
    assert result.checksum == hashlib.sha256(data).hexdigest()


async def test_a_larger_object_gets_its_checksum_and_byte_count_as_tags_without_a_copy(s3: FakeS3) -> None:
    upload = await start(s3)
    data = [b"a" * 25, b"b" * 7, b"\xe2\x82\xac" * 3]
    for chunk in data:
        await upload.write(chunk)
    await upload.complete({"job-id": "j1", "row-count": "42"})

    everything = b"".join(data)
    facts = {
        "job-id": "j1",
        "row-count": "42",
        "sha256": hashlib.sha256(everything).hexdigest(),
        "byte-count": str(len(everything)),
    }
    [tagging] = s3.called("put_object_tagging")
    assert (tagging["Bucket"], tagging["Key"]) == (BUCKET, KEY)
    assert {tag["Key"]: tag["Value"] for tag in tagging["Tagging"]["TagSet"]} == facts
    # The tags go on the finished object, and nothing copies it
    methods = [name for name, _ in s3.calls]
    assert methods.index("complete_multipart_upload") < methods.index("put_object_tagging")
    assert "copy_object" not in methods
    assert s3.objects[(BUCKET, KEY)]["Tags"] == facts
    assert s3.objects[(BUCKET, KEY)]["Body"] == everything


async def test_exact_multiple_of_the_part_size_sends_no_empty_tail(s3: FakeS3) -> None:
    upload = await start(s3)
    await upload.write(b"x" * PART)
    await upload.write(b"y" * PART)
    result = await upload.complete({})
    assert part_bodies(s3) == [b"x" * PART, b"y" * PART]
    assert result.parts == 2


async def test_an_empty_export_still_uploads_one_empty_part(s3: FakeS3) -> None:
    upload = await start(s3)
    result = await upload.complete({})
    assert part_bodies(s3) == [b""]
    assert result.parts == 1
    assert result.byte_count == 0
    assert result.checksum == hashlib.sha256(b"").hexdigest()
    assert s3.objects[(BUCKET, KEY)]["Body"] == b""


def opened(s3: FakeS3, started: list[str] | None = None, part_size: int = PART) -> MultipartUpload:
    """An upload as the exporter opens it: nothing in S3 until it must be, ids reported."""

    async def on_start(upload_id: str) -> None:
        if started is not None:
            started.append(upload_id)

    return ObjectStore(s3, part_size, retry_window=0).open_upload(BUCKET, KEY, DISPOSITION, on_start)


async def test_an_object_that_fits_in_one_part_is_created_labelled_and_never_copied(s3: FakeS3) -> None:
    # Given an opened upload and less than a part written: nothing exists in S3 yet
    started: list[str] = []
    upload = opened(s3, started)
    await upload.write(b"head\n")
    await upload.write(b"row\n")
    assert (s3.calls, upload.upload_id, started) == ([], None, [])
    # When it completes
    result = await upload.complete({"job-id": "j1", "row-count": "1"})
    # Then three requests made it, the metadata (checksum included) given at creation, no copy
    data = b"head\nrow\n"
    checksum = hashlib.sha256(data).hexdigest()
    assert [name for name, _ in s3.calls] == [
        "create_multipart_upload",
        "upload_part",
        "complete_multipart_upload",
    ]
    [create] = s3.called("create_multipart_upload")
    assert create["Metadata"] == {
        "job-id": "j1",
        "row-count": "1",
        "sha256": checksum,
        "byte-count": str(len(data)),
    }
    assert (create["ContentType"], create["ContentDisposition"]) == (CSV_CONTENT_TYPE, DISPOSITION)
    stored = s3.objects[(BUCKET, KEY)]
    assert (stored["Body"], stored["Metadata"]["sha256"]) == (data, checksum)
    assert stored["Tags"] == create["Metadata"]  # the same facts as tags, in the same request
    assert (result.checksum, result.byte_count, result.parts) == (checksum, len(data), 1)
    # And the upload id was reported once, before the part went out
    assert started == [upload.upload_id]


async def test_an_empty_opened_export_is_one_labelled_empty_part(s3: FakeS3) -> None:
    result = await opened(s3).complete({})
    assert part_bodies(s3) == [b""]
    assert s3.called("put_object_tagging") == []
    assert (
        s3.objects[(BUCKET, KEY)]["Metadata"]["sha256"] == hashlib.sha256(b"").hexdigest() == result.checksum
    )


async def test_a_larger_object_is_created_with_its_first_part_and_tagged_at_the_end(s3: FakeS3) -> None:
    started: list[str] = []
    upload = opened(s3, started)
    await upload.write(b"a" * 6)
    assert s3.calls == []
    # The first full part creates the upload (no checksum yet), reports it, then sends the part
    await upload.write(b"b" * 6)
    assert [name for name, _ in s3.calls] == ["create_multipart_upload", "upload_part"]
    assert "Metadata" not in s3.called("create_multipart_upload")[0]
    assert started == [upload.upload_id]
    await upload.write(b"c" * 3)
    result = await upload.complete({"job-id": "j1"})
    data = b"a" * 6 + b"b" * 6 + b"c" * 3
    assert s3.objects[(BUCKET, KEY)]["Tags"] == {
        "job-id": "j1",
        "sha256": hashlib.sha256(data).hexdigest(),
        "byte-count": "15",
    }
    assert s3.objects[(BUCKET, KEY)]["ContentDisposition"] == DISPOSITION
    assert s3.objects[(BUCKET, KEY)]["Body"] == data
    assert (result.parts, started) == (2, [upload.upload_id])


async def test_an_upload_whose_id_cannot_be_recorded_sends_no_byte_and_can_be_aborted(s3: FakeS3) -> None:
    class Refused(Exception):
        pass

    async def refuse(upload_id: str) -> None:
        raise Refused(upload_id)

    upload = ObjectStore(s3, PART, retry_window=0).open_upload(BUCKET, KEY, DISPOSITION, refuse)
    with pytest.raises(Refused):
        await upload.write(b"x" * PART)
    assert s3.called("upload_part") == []
    assert upload.upload_id in s3.uploads  # known, so the caller can abort it
    await ObjectStore(s3, PART, retry_window=0).abort_upload(BUCKET, KEY, upload.upload_id)
    assert s3.uploads == {}


async def test_more_than_max_parts_is_terminal(s3: FakeS3, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given at most 3 parts per upload
    monkeypatch.setattr(storage, "MAX_PARTS", 3)
    upload = await start(s3)
    for _ in range(3):
        await upload.write(b"z" * PART)
    # When a fourth part is needed, the upload stops with a terminal error
    await upload.write(b"z")
    with pytest.raises(TerminalStorageError, match="EXPORT_PART_SIZE"):
        await upload.complete({})
    assert len(s3.called("upload_part")) == 3
    assert s3.called("complete_multipart_upload") == []


async def test_max_parts_exactly_is_fine(s3: FakeS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "MAX_PARTS", 3)
    upload = await start(s3)
    for _ in range(2):
        await upload.write(b"z" * PART)
    await upload.write(b"end")
    assert (await upload.complete({})).parts == 3


async def test_upload_part_failure_is_classified(s3: FakeS3) -> None:
    s3.errors["upload_part"] = client_error("SlowDown", 503)
    upload = await start(s3)
    with pytest.raises(RetryableStorageError, match="part 1"):
        await upload.write(b"q" * PART)


async def test_complete_failure_is_classified(s3: FakeS3) -> None:
    s3.errors["complete_multipart_upload"] = client_error("AccessDenied", 403, "CompleteMultipartUpload")
    upload = await start(s3)
    await upload.write(b"x")
    with pytest.raises(TerminalStorageError, match="AccessDenied"):
        await upload.complete({})
    assert s3.called("put_object_tagging") == []


async def test_abort_aborts_the_upload(s3: FakeS3) -> None:
    upload = await start(s3)
    await upload.write(b"x" * PART)
    await ObjectStore(s3, PART, retry_window=0).abort_upload(BUCKET, KEY, upload.upload_id)
    assert s3.called("abort_multipart_upload") == [
        {"Bucket": BUCKET, "Key": KEY, "UploadId": upload.upload_id}
    ]
    assert s3.uploads == {}


async def test_abort_of_an_upload_already_gone_counts_as_aborted(s3: FakeS3) -> None:
    store = ObjectStore(s3, PART, retry_window=0)
    upload = await start(s3)
    await store.abort_upload(BUCKET, KEY, upload.upload_id)
    await store.abort_upload(BUCKET, KEY, upload.upload_id)  # NoSuchUpload: nothing left to abort
    assert len(s3.called("abort_multipart_upload")) == 2


async def test_abort_failure_is_classified(s3: FakeS3) -> None:
    s3.errors["abort_multipart_upload"] = client_error("AccessDenied", 403, "AbortMultipartUpload")
    with pytest.raises(StorageError, match="AccessDenied"):
        await ObjectStore(s3, PART, retry_window=0).abort_upload(BUCKET, KEY, "u-1")


async def test_retryable_failures_are_retried_within_the_window(s3: FakeS3) -> None:
    # Given S3 answers SlowDown twice, then recovers
    real = s3.upload_part
    failures = [client_error("SlowDown", 503), client_error("SlowDown", 503)]

    async def flaky(**kwargs: object) -> Mapping[str, object]:
        if failures:
            raise failures.pop()
        return await real(**kwargs)

    s3.upload_part = flaky  # type: ignore[method-assign]
    store = ObjectStore(s3, PART, retry_window=5)
    store._retrier.first_delay = 0.01
    upload = await store.start_upload(BUCKET, KEY, DISPOSITION)
    # When a part is sent
    await upload.write(b"x" * PART)
    # Then it went through on the third try
    assert failures == []
    assert len(s3.uploads[upload.upload_id]["parts"]) == 1


async def test_terminal_failures_are_not_retried(s3: FakeS3) -> None:
    s3.errors["upload_part"] = client_error("AccessDenied", 403)
    store = ObjectStore(s3, PART, retry_window=30)
    upload = await store.start_upload(BUCKET, KEY, DISPOSITION)
    with pytest.raises(TerminalStorageError):
        await upload.write(b"x" * PART)
    assert len(s3.called("upload_part")) == 1


async def test_retries_stop_when_the_window_closes(s3: FakeS3) -> None:
    s3.errors["upload_part"] = client_error("SlowDown", 503)
    store = ObjectStore(s3, PART, retry_window=0.2)
    store._retrier.first_delay = 0.05
    upload = await store.start_upload(BUCKET, KEY, DISPOSITION)
    with pytest.raises(RetryableStorageError, match="tries"):
        await upload.write(b"x" * PART)
    assert 2 <= len(s3.called("upload_part")) <= 4


async def test_stale_uploads_lists_only_old_uploads_under_the_prefix(s3: FakeS3) -> None:
    store = ObjectStore(s3, PART, retry_window=0)
    old = await store.start_upload(BUCKET, "analytics/exports/a.csv", DISPOSITION)
    await store.start_upload(BUCKET, "elsewhere/b.csv", DISPOSITION)
    s3.uploads[old.upload_id]["Initiated"] -= timedelta(hours=3)
    await store.start_upload(BUCKET, "analytics/exports/new.csv", DISPOSITION)
    found = await store.stale_uploads(BUCKET, "analytics/exports/", older_than=3600)
    assert found == [("analytics/exports/a.csv", old.upload_id)]


async def test_delete_and_presign(s3: FakeS3) -> None:
    store = ObjectStore(s3, PART, retry_window=0)
    s3.objects[(BUCKET, KEY)] = {"Body": b"x"}
    await store.delete(BUCKET, KEY)
    assert (BUCKET, KEY) not in s3.objects
    url = await store.presign_download(BUCKET, KEY, expires_in=3599.9)
    [presign] = s3.called("generate_presigned_url")
    assert presign == {"ClientMethod": "get_object", "Bucket": BUCKET, "Key": KEY, "ExpiresIn": 3599}
    assert url.startswith("https://")


async def test_presign_never_asks_for_less_than_one_second(s3: FakeS3) -> None:
    await ObjectStore(s3, PART, retry_window=0).presign_download(BUCKET, KEY, expires_in=0.2)
    assert s3.called("generate_presigned_url")[0]["ExpiresIn"] == 1


async def test_delete_failure_is_classified(s3: FakeS3) -> None:
    s3.errors["delete_object"] = client_error("InternalError", 500, "DeleteObject")
    with pytest.raises(RetryableStorageError, match="delete"):
        await ObjectStore(s3, PART, retry_window=0).delete(BUCKET, KEY)


@pytest.mark.parametrize(
    ("code", "status"),
    [("NoSuchBucket", 404), ("AccessDenied", 403), ("InvalidRequest", 400), ("EntityTooSmall", 400)],
)
def test_client_errors_that_retrying_cannot_fix_are_terminal(code: str, status: int) -> None:
    error = storage_error(client_error(code, status, message="nope"), "upload of part 1")
    assert isinstance(error, TerminalStorageError)
    assert code in str(error)
    assert "upload of part 1" in str(error)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SlowDown", 503),
        ("SlowDown", 0),  # no HTTP status known: the code alone decides
        ("Throttling", 400),
        ("InternalError", 503),
        ("InternalError", 500),
        ("RequestTimeout", 400),
        ("ServiceUnavailable", 503),
        ("SomethingNew", 500),  # any 5xx
        ("SomethingNew", 502),
    ],
)
def test_throttling_timeouts_and_5xx_are_retryable(code: str, status: int) -> None:
    error = storage_error(client_error(code, status), "complete")
    assert isinstance(error, RetryableStorageError)
    assert code in str(error)


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
        ConnectionResetError("reset by peer"),
        TimeoutError(),
    ],
)
def test_connection_failures_are_retryable(exc: Exception) -> None:
    assert isinstance(storage_error(exc, "delete"), RetryableStorageError)


def test_missing_credentials_are_terminal() -> None:
    assert isinstance(storage_error(NoCredentialsError(), "delete"), TerminalStorageError)


def test_error_message_without_detail_has_no_dangling_colon() -> None:
    assert str(storage_error(client_error("NoSuchBucket", 404), "delete")) == (
        "S3 delete failed: NoSuchBucket"
    )


@pytest.mark.parametrize(
    ("bucket", "key"),
    [
        (BUCKET, KEY),
        ("b-1", "k"),
        ("my.bucket", "a/b/c with space.csv"),
    ],
)
def test_s3_uri_round_trip(bucket: str, key: str) -> None:
    uri = s3_uri(bucket, key)
    assert uri == f"s3://{bucket}/{key}"
    assert parse_s3_uri(uri) == (bucket, key)


@pytest.mark.parametrize("uri", ["https://bucket/key", "s3://bucket-only", "bucket/key", ""])
def test_parse_s3_uri_rejects_other_uris(uri: str) -> None:
    with pytest.raises(ValueError, match="s3://"):
        parse_s3_uri(uri)


async def test_with_two_parts_in_flight_uploads_overlap_and_bytes_stay_in_order(s3: FakeS3) -> None:
    # Given an S3 whose part uploads take a while, counting how many run at once
    real = s3.upload_part
    running, most = 0, 0

    async def slow(**kwargs: object) -> Mapping[str, object]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        return await real(**kwargs)

    s3.upload_part = slow  # type: ignore[method-assign]
    upload = await ObjectStore(s3, PART, retry_window=0, parts_in_flight=2).start_upload(
        BUCKET, KEY, DISPOSITION
    )
    data = b"".join(bytes([i]) * PART for i in range(7)) + b"tail"
    # When seven full parts and a tail are written and the upload completed
    for i in range(0, len(data), PART // 2):
        await upload.write(data[i : i + PART // 2])
    result = await upload.complete({})
    # Then two parts were on their way at once, never more, and the object is the bytes in order
    assert most == 2
    assert s3.objects[(BUCKET, KEY)]["Body"] == data
    assert result.checksum == hashlib.sha256(data).hexdigest()


async def test_a_background_part_failure_surfaces_and_discard_stops_the_rest(s3: FakeS3) -> None:
    s3.errors["upload_part"] = client_error("AccessDenied", 403)
    upload = await ObjectStore(s3, PART, retry_window=0, parts_in_flight=2).start_upload(
        BUCKET, KEY, DISPOSITION
    )
    await upload.write(b"x" * PART)  # part 1 goes out in the background
    with pytest.raises(TerminalStorageError):
        await upload.write(b"y" * PART)  # the next part waits for part 1, which failed
    await upload.discard()
    await upload.discard()  # idempotent
