"""The manifest: what an export wrote and what it counted, in one JSON document.

It is the export's last write to S3, beside the data (``{job_id}.manifest.json``): a manifest
that exists vouches for a complete data file. It lists each file with its exact byte-level facts
and states the totals per currency that the worker counted from the rows it streamed, so a
reader can check a file, and see its figures, without trusting anything else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from typing import Final

import orjson

from service.job import Job, rfc3339
from service.tally import Totals

#: Bumped when a field changes meaning or goes away (adding one does not bump it).
MANIFEST_VERSION: Final = 1
MANIFEST_CONTENT_TYPE: Final = "application/json"
GENERATOR: Final = "analytics-exports"


@dataclass(frozen=True, slots=True)
class FileFacts:
    """One stored object: its key and the facts of exactly its bytes."""

    key: str
    rows: int
    bytes: int
    sha256: str
    content_type: str
    #: ``gzip`` when the stored bytes are the compression of ``uncompressed_*``.
    content_encoding: str | None = None
    uncompressed_bytes: int | None = None
    uncompressed_sha256: str | None = None

    def document(self) -> dict[str, object]:
        facts: dict[str, object] = {
            "key": self.key,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "contentType": self.content_type,
            "contentEncoding": self.content_encoding,
        }
        if self.content_encoding is not None:
            facts["uncompressed"] = {"bytes": self.uncompressed_bytes, "sha256": self.uncompressed_sha256}
        return facts


def generator_version() -> str:
    try:
        return metadata.version(GENERATOR)
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def build_manifest(job: Job, files: Sequence[FileFacts], totals: Totals, generated_at: datetime) -> bytes:
    """The manifest of ``job`` as written to S3 (UTF-8 JSON, keys in a fixed order)."""
    coverage = job.coverage
    document = {
        "manifestVersion": MANIFEST_VERSION,
        "jobId": str(job.job_id),
        "orgId": str(job.org_id),
        "request": {
            "granularity": job.granularity.value,
            "timeRange": {"start": rfc3339(job.time_range_start), "end": rfc3339(job.time_range_end)},
            "timeZone": job.time_zone,
            "coverage": {"start": rfc3339(coverage.start), "end": rfc3339(coverage.end)},
            "models": list(job.models) if job.models is not None else None,
            "format": job.output_format.value,
            "schema": job.output_schema.value,
        },
        "files": [f.document() for f in files],
        # Money as exact decimal strings (never a JSON number: readers parse those as floats).
        "totals": {
            currency: {
                "costTotal": format(t.cost_total, "f"),
                "requestCount": t.request_count,
                "tokensTotal": t.tokens_total,
                "errorCount": t.error_count,
            }
            for currency, t in totals.by_currency.items()
        },
        "generatedAt": rfc3339(generated_at),
        "generator": {"name": GENERATOR, "version": generator_version()},
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def checksum(manifest: bytes) -> str:
    return hashlib.sha256(manifest).hexdigest()
