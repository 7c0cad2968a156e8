"""The S3 port: multipart uploads that hash what they send, presigned downloads, deletes.

Works against AWS S3, MinIO and moto; with an explicit endpoint it uses path-style addressing.
botocore errors are re-raised as :class:`~service.errors.TerminalStorageError` (retrying cannot
help: missing bucket, access denied, bad request) or :class:`~service.errors.RetryableStorageError`
(timeouts, connection resets, 5xx, throttling).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol, TypeVar
from urllib.parse import urlencode

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from service.errors import RetryableStorageError, StorageError, TerminalStorageError
from service.metrics import ExportMetrics
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
#: S3 allows at most 10,000 parts in one multipart upload.
MAX_PARTS: Final = 10_000
CSV_CONTENT_TYPE: Final = "text/csv; charset=utf-8"
_RETRYABLE_CODES: Final = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "503",
        "500",
        "502",
        "504",
    }
)


class S3Client(Protocol):
    """The subset of the aiobotocore S3 client this module uses (a fake implements it in unit tests)."""

    async def create_multipart_upload(self, **kwargs: object) -> Mapping[str, object]: ...
    async def upload_part(self, **kwargs: object) -> Mapping[str, object]: ...
    async def complete_multipart_upload(self, **kwargs: object) -> Mapping[str, object]: ...
    async def abort_multipart_upload(self, **kwargs: object) -> Mapping[str, object]: ...
    async def put_object_tagging(self, **kwargs: object) -> Mapping[str, object]: ...
    async def put_object(self, **kwargs: object) -> Mapping[str, object]: ...
    async def delete_object(self, **kwargs: object) -> Mapping[str, object]: ...
    async def head_bucket(self, **kwargs: object) -> Mapping[str, object]: ...
    async def create_bucket(self, **kwargs: object) -> Mapping[str, object]: ...
    async def put_bucket_cors(self, **kwargs: object) -> Mapping[str, object]: ...
    async def list_multipart_uploads(self, **kwargs: object) -> Mapping[str, object]: ...
    async def generate_presigned_url(
        self,
        ClientMethod: str,
        Params: Mapping[str, object],
        ExpiresIn: int,
    ) -> str: ...


def storage_error(exc: Exception, action: str) -> StorageError:
    """Classify a botocore failure as retryable or terminal, with a readable message."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"S3 {action} failed: {code}: {error.get('Message', '')}".rstrip(": ")
        if code in _RETRYABLE_CODES or status >= 500:
            return RetryableStorageError(message)
        return TerminalStorageError(message)
    if isinstance(exc, ConnectionError | HTTPClientError | TimeoutError | OSError):
        return RetryableStorageError(f"S3 {action} failed: {exc}")
    return TerminalStorageError(f"S3 {action} failed: {exc}")


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


@asynccontextmanager
async def open_s3_client(settings: Settings, *, public: bool = False) -> AsyncIterator[S3Client]:
    """An aiobotocore S3 client configured from settings; closed on exit. ``public``: the client
    that signs download links, for the address users reach (``S3_PUBLIC_ENDPOINT``)."""
    endpoint = (settings.s3_public_endpoint or settings.s3_endpoint) if public else settings.s3_endpoint
    config = Config(
        region_name=settings.s3_region,
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint else "auto"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=max(10, settings.export_worker_concurrency * 4),
    )
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        config=config,
    ) as client:
        yield client


class Retrier:
    """Retries one S3 call on retryable failures, with exponential backoff, for up to ``window``
    seconds (on top of botocore's own three quick tries). Terminal failures raise at once."""

    def __init__(
        self,
        window: float,
        first_delay: float = 0.25,
        max_delay: float = 4.0,
        on_retry: Callable[[], object] | None = None,
    ) -> None:
        self.window = window
        self.first_delay = first_delay
        self.max_delay = max_delay
        #: Called before each retry (the metrics count them).
        self._on_retry = on_retry

    async def __call__(self, action: str, call: Callable[[], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self.window
        delay = self.first_delay
        tries = 0
        while True:
            tries += 1
            try:
                return await call()
            except (BotoCoreError, ClientError, OSError) as exc:
                error = storage_error(exc, action)
                if not isinstance(error, RetryableStorageError) or time.monotonic() + delay > deadline:
                    if tries > 1:
                        error = type(error)(f"{error} (after {tries} tries)")
                    raise error from exc
                log.warning(
                    "S3 call failed; retrying", extra={"action": action, "reason": str(error), "try": tries}
                )
                if self._on_retry is not None:
                    self._on_retry()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)


@dataclass(frozen=True, slots=True)
class UploadResult:
    checksum: str
    byte_count: int
    parts: int


class MultipartUpload:
    """One streaming multipart upload: ``write`` chunks, then ``complete`` (or ``discard`` and abort).

    Bytes are buffered until a part is full, so memory stays near ``parts_in_flight + 1`` parts
    whatever the export size. SHA-256 and the byte count are computed over exactly the bytes sent,
    in order. With ``parts_in_flight`` 2, a full part uploads while the next one fills (reading
    and uploading overlap); ``write`` waits whenever that many parts are still on their way, which
    is the backpressure the COPY stream feels. Call ``discard`` before abandoning an upload.

    The S3 upload is created when the first part is full, or at ``complete`` if the whole object
    fits in one part. Then the checksum is known before the upload exists, so the facts (checksum,
    byte count and the caller's ``metadata``) go on at creation, as metadata and as tags: three
    requests for a typical export. A larger object's facts are known only at the end, and S3
    fixes metadata at creation: they go on as tags after completion (PutObjectTagging changes
    no byte; copying the object to rewrite its metadata would move all of them). Either way
    ``on_start`` is awaited with the new upload id before any byte is sent (the exporter records
    it, fenced by its lease; if it raises, the upload is still ``upload_id`` and must be aborted).
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        content_disposition: str,
        part_size: int,
        retrier: Retrier,
        parts_in_flight: int = 1,
        on_part: Callable[[float], object] | None = None,
        on_start: Callable[[str], Awaitable[None]] | None = None,
        content_type: str = CSV_CONTENT_TYPE,
    ) -> None:
        self.client = client
        self._content_type = content_type
        self.bucket = bucket
        self.key = key
        self._content_disposition = content_disposition
        #: The S3 upload, once created: ``None`` means nothing exists in S3 yet (nothing to abort).
        self.upload_id: str | None = None
        self._part_size = part_size
        self._retrier = retrier
        self._buffer = bytearray()
        self._parts: list[dict[str, object]] = []
        self._sha256 = hashlib.sha256()
        self._bytes = 0
        self._parts_in_flight = max(1, parts_in_flight)
        self._in_flight: list[asyncio.Task[None]] = []
        #: Called with each part's upload time in seconds, retries included (the metrics).
        self._on_part = on_part
        self._on_start = on_start
        #: True once CompleteMultipartUpload succeeded: from then on the object exists and
        #: cleaning up means deleting it, not aborting the upload.
        self.completed = False

    async def start(self, metadata: Mapping[str, str] | None = None) -> str:
        """Create the S3 upload now (with ``metadata`` as metadata and tags, if known already) and
        report its id."""
        if self.upload_id is not None:
            return self.upload_id
        extra: dict[str, object] = (
            {"Metadata": dict(metadata), "Tagging": urlencode(dict(metadata))} if metadata else {}
        )
        response = await self._retrier(
            "start of the multipart upload",
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                ContentType=self._content_type,
                ContentDisposition=self._content_disposition,
                **extra,
            ),
        )
        self.upload_id = upload_id = str(response["UploadId"])
        if self._on_start is not None:
            await self._on_start(upload_id)
        return upload_id

    @property
    def parts_sent(self) -> int:
        return len(self._parts)

    async def write(self, chunk: bytes) -> None:
        # Every byte written is sent, in order, or the upload is abandoned: hashing here is
        # hashing what is sent, and the checksum is ready whenever the upload is created.
        self._sha256.update(chunk)
        self._bytes += len(chunk)
        self._buffer += chunk
        if len(self._buffer) >= self._part_size:
            await self.start()
            await self._flush()

    async def _flush(self) -> None:
        part_number = len(self._parts) + 1
        if part_number > MAX_PARTS:
            raise TerminalStorageError(
                f"export needs more than {MAX_PARTS} parts of {self._part_size} bytes; raise EXPORT_PART_SIZE"
            )
        body, self._buffer = self._buffer, bytearray()
        part: dict[str, object] = {"PartNumber": part_number}
        self._parts.append(part)
        self._in_flight.append(asyncio.create_task(self._send(part, body)))
        await self._drain(keep=self._parts_in_flight - 1)

    async def _send(self, part: dict[str, object], body: bytearray) -> None:
        number = part["PartNumber"]
        started = time.monotonic()
        response = await self._retrier(
            f"upload of part {number}",
            lambda: self.client.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
            ),
        )
        part["ETag"] = response["ETag"]
        if self._on_part is not None:
            self._on_part(time.monotonic() - started)

    async def _drain(self, keep: int) -> None:
        """Wait, oldest first, until at most ``keep`` part uploads are on their way; a failed
        upload raises here."""
        while len(self._in_flight) > keep:
            await self._in_flight.pop(0)

    async def discard(self) -> None:
        """Stop any part upload still on its way (before an abort, or when the attempt fails)."""
        pending, self._in_flight = self._in_flight, []
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task

    async def complete(self, metadata: Mapping[str, str]) -> UploadResult:
        """Send the last part, complete the upload with ``metadata`` plus the checksum and byte
        count; return the facts."""
        labelled_at_start = self.upload_id is None
        if labelled_at_start:  # the whole object is in the buffer: its checksum is known now
            await self.start({**metadata, "sha256": self._sha256.hexdigest(), "byte-count": str(self._bytes)})
        if self._buffer or not self._parts:
            await self._flush()  # the last part may be small; an empty export still has its header
        await self._drain(keep=0)
        calls = 0

        async def complete() -> Mapping[str, object]:
            nonlocal calls
            calls += 1
            try:
                return await self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
            except ClientError as exc:
                # A repeated complete that finds no upload may mean the first one succeeded and
                # only its answer was lost: not a reason to give up the whole job.
                if calls > 1 and exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    raise RetryableStorageError("S3 complete: outcome of an earlier try unknown") from exc
                raise

        await self._retrier("complete of the multipart upload", complete)
        self.completed = True
        result = UploadResult(
            checksum=self._sha256.hexdigest(), byte_count=self._bytes, parts=len(self._parts)
        )
        if not labelled_at_start:
            facts = {**metadata, "sha256": result.checksum, "byte-count": str(result.byte_count)}
            tags = [{"Key": name, "Value": value} for name, value in facts.items()]
            await self._retrier(
                "tagging",
                lambda: self.client.put_object_tagging(
                    Bucket=self.bucket, Key=self.key, Tagging={"TagSet": tags}
                ),
            )
        return result


class ObjectStore:
    """Export objects in S3."""

    def __init__(
        self,
        client: S3Client,
        part_size: int,
        retry_window: float = 30.0,
        parts_in_flight: int = 1,
        metrics: ExportMetrics | None = None,
        signer: S3Client | None = None,
    ) -> None:
        self._client = client
        #: Signs download links (for the public S3 address, when it differs).
        self._signer = signer or client
        self._part_size = part_size
        self._retrier = Retrier(retry_window, on_retry=metrics.storage_retries.inc if metrics else None)
        self._parts_in_flight = parts_in_flight
        self._on_part = metrics.part_upload.observe if metrics else None

    @classmethod
    def from_settings(
        cls,
        client: S3Client,
        settings: Settings,
        metrics: ExportMetrics | None = None,
        signer: S3Client | None = None,
    ) -> ObjectStore:
        """The store exactly as the worker runs it (part size, retry window, parts in flight)."""
        return cls(
            client,
            settings.export_part_size,
            settings.export_retry_window,
            settings.export_parts_in_flight,
            metrics,
            signer,
        )

    def open_upload(
        self,
        bucket: str,
        key: str,
        content_disposition: str,
        on_start: Callable[[str], Awaitable[None]] | None = None,
        content_type: str = CSV_CONTENT_TYPE,
    ) -> MultipartUpload:
        """An upload to ``key``; nothing exists in S3 until its first part is full or it completes."""
        return MultipartUpload(
            self._client,
            bucket,
            key,
            content_disposition,
            self._part_size,
            self._retrier,
            self._parts_in_flight,
            self._on_part,
            on_start,
            content_type,
        )

    async def start_upload(self, bucket: str, key: str, content_disposition: str) -> MultipartUpload:
        """An upload created in S3 at once (its checksum then comes as tags at completion)."""
        upload = self.open_upload(bucket, key, content_disposition)
        await upload.start()
        return upload

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Abort a multipart upload; one that no longer exists counts as aborted."""

        async def abort() -> None:
            try:
                await self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise

        await self._retrier("abort of the multipart upload", abort)

    async def stale_uploads(self, bucket: str, prefix: str, older_than: float) -> list[tuple[str, str]]:
        """``(key, upload_id)`` of incomplete multipart uploads under ``prefix`` started more than
        ``older_than`` seconds ago."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        found: list[tuple[str, str]] = []
        markers: dict[str, object] = {}
        while True:

            async def list_page(markers: dict[str, object] = markers) -> Mapping[str, object]:
                return await self._client.list_multipart_uploads(Bucket=bucket, Prefix=prefix, **markers)

            page = await self._retrier(f"listing of multipart uploads in {bucket}", list_page)
            for upload in page.get("Uploads", []) or []:  # type: ignore[attr-defined]
                if upload["Initiated"] < cutoff:
                    found.append((str(upload["Key"]), str(upload["UploadId"])))
            if not page.get("IsTruncated"):
                return found
            markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    async def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        """Store a small object in one request (the manifest)."""
        await self._retrier(
            f"put of {key.rsplit('/', 1)[-1]}",
            lambda: self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type),
        )

    async def delete(self, bucket: str, key: str) -> None:
        await self._retrier("delete", lambda: self._client.delete_object(Bucket=bucket, Key=key))

    async def presign_download(self, bucket: str, key: str, expires_in: float) -> str:
        try:
            return await self._signer.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=max(1, math.floor(expires_in))
            )
        except (BotoCoreError, ClientError, OSError) as exc:
            raise storage_error(exc, "presign") from exc

    async def check_bucket(self, bucket: str) -> None:
        try:
            await self._client.head_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise storage_error(exc, f"head of bucket {bucket}") from exc
