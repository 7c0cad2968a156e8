"""The S3 port: multipart uploads that hash what they send, presigned downloads, deletes.

Works against AWS S3, MinIO and moto; with an explicit endpoint it uses path-style addressing.
botocore errors are re-raised as :class:`~service.errors.TerminalStorageError` (retrying cannot
help: missing bucket, access denied, bad request) or :class:`~service.errors.RetryableStorageError`
(timeouts, connection resets, 5xx, throttling).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Protocol

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from service.errors import RetryableStorageError, StorageError, TerminalStorageError
from service.settings import Settings

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
    async def copy_object(self, **kwargs: object) -> Mapping[str, object]: ...
    async def delete_object(self, **kwargs: object) -> Mapping[str, object]: ...
    async def head_bucket(self, **kwargs: object) -> Mapping[str, object]: ...
    async def create_bucket(self, **kwargs: object) -> Mapping[str, object]: ...
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
async def open_s3_client(settings: Settings) -> AsyncIterator[S3Client]:
    """An aiobotocore S3 client configured from settings; closed on exit."""
    config = Config(
        region_name=settings.s3_region,
        signature_version="s3v4",
        s3={"addressing_style": "path" if settings.s3_endpoint else "auto"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=max(10, settings.export_worker_concurrency * 4),
    )
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        config=config,
    ) as client:
        yield client


@dataclass(frozen=True, slots=True)
class UploadResult:
    checksum: str
    byte_count: int
    parts: int


class MultipartUpload:
    """One streaming multipart upload: ``write`` chunks, then ``complete`` or ``abort``.

    Bytes are buffered until a part is full, so memory stays near one part whatever the export
    size. SHA-256 and the byte count are computed over exactly the bytes sent.
    """

    def __init__(self, client: S3Client, bucket: str, key: str, upload_id: str, part_size: int) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.upload_id = upload_id
        self._part_size = part_size
        self._buffer = bytearray()
        self._parts: list[dict[str, object]] = []
        self._sha256 = hashlib.sha256()
        self._bytes = 0
        #: True once CompleteMultipartUpload succeeded: from then on the object exists and
        #: cleaning up means deleting it, not aborting the upload.
        self.completed = False

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) >= self._part_size:
            await self._flush()

    async def _flush(self) -> None:
        part_number = len(self._parts) + 1
        if part_number > MAX_PARTS:
            raise TerminalStorageError(
                f"export needs more than {MAX_PARTS} parts of {self._part_size} bytes; raise EXPORT_PART_SIZE"
            )
        body, self._buffer = self._buffer, bytearray()
        self._sha256.update(body)
        self._bytes += len(body)
        try:
            response = await self.client.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=part_number, Body=body
            )
        except (BotoCoreError, ClientError, OSError) as exc:
            raise storage_error(exc, f"upload of part {part_number}") from exc
        self._parts.append({"ETag": response["ETag"], "PartNumber": part_number})

    async def complete(self, metadata: Mapping[str, str], content_disposition: str) -> UploadResult:
        """Send the last part, complete the upload and attach the metadata; return the facts."""
        if self._buffer or not self._parts:
            await self._flush()  # the last part may be small; an empty export still has its header
        try:
            await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except (BotoCoreError, ClientError, OSError) as exc:
            raise storage_error(exc, "complete of the multipart upload") from exc
        self.completed = True
        result = UploadResult(
            checksum=self._sha256.hexdigest(), byte_count=self._bytes, parts=len(self._parts)
        )
        # Multipart uploads fix metadata at creation, before the checksum exists: a server-side
        # copy onto the same key replaces it without moving the bytes through us.
        try:
            await self.client.copy_object(
                Bucket=self.bucket,
                Key=self.key,
                CopySource={"Bucket": self.bucket, "Key": self.key},
                MetadataDirective="REPLACE",
                ContentType=CSV_CONTENT_TYPE,
                ContentDisposition=content_disposition,
                Metadata={**metadata, "sha256": result.checksum, "byte-count": str(result.byte_count)},
            )
        except (BotoCoreError, ClientError, OSError) as exc:
            raise storage_error(exc, "metadata update") from exc
        return result

    async def abort(self) -> None:
        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
            )
        except (BotoCoreError, ClientError, OSError) as exc:
            raise storage_error(exc, "abort of the multipart upload") from exc


class ObjectStore:
    """Export objects in S3."""

    def __init__(self, client: S3Client, part_size: int) -> None:
        self._client = client
        self._part_size = part_size

    async def start_upload(self, bucket: str, key: str, content_disposition: str) -> MultipartUpload:
        try:
            response = await self._client.create_multipart_upload(
                Bucket=bucket, Key=key, ContentType=CSV_CONTENT_TYPE, ContentDisposition=content_disposition
            )
        except (BotoCoreError, ClientError, OSError) as exc:
            raise storage_error(exc, "start of the multipart upload") from exc
        return MultipartUpload(self._client, bucket, key, str(response["UploadId"]), self._part_size)

    async def delete(self, bucket: str, key: str) -> None:
        try:
            await self._client.delete_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise storage_error(exc, "delete") from exc

    async def presign_download(self, bucket: str, key: str, expires_in: float) -> str:
        try:
            return await self._client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=max(1, math.floor(expires_in))
            )
        except (BotoCoreError, ClientError, OSError) as exc:
            raise storage_error(exc, "presign") from exc

    async def check_bucket(self, bucket: str) -> None:
        try:
            await self._client.head_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise storage_error(exc, f"head of bucket {bucket}") from exc
