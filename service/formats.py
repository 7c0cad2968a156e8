"""How each export format is stored: the object's content type, gzip for ``csv.gz``, and the
typed Parquet columns of each dataset schema.

Every format starts from the same CSV stream PostgreSQL's COPY writes: ``csv`` stores it as it
is, ``csv.gz`` compresses it on the way (one gzip member, streamed), ``parquet`` has it parsed
into typed columns by the tally's reader (service/tally.py).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from service.job import DatasetSchema, ExportFormat
from service.storage import CSV_CONTENT_TYPE

if TYPE_CHECKING:
    import pyarrow as pa

CONTENT_TYPES: Final = {
    ExportFormat.CSV: CSV_CONTENT_TYPE,
    ExportFormat.CSV_GZ: "application/gzip",
    ExportFormat.PARQUET: "application/vnd.apache.parquet",
}
#: zlib's default: about 7x smaller CSV for about 15 ms of CPU per MB.
GZIP_LEVEL: Final = 6


@dataclass(frozen=True, slots=True)
class Columns:
    """Which columns of a dataset hold the currency and the figures that are totalled."""

    currency: str
    cost: str
    requests: str
    tokens: str
    errors: str
    #: FOCUS writes the tokens as a decimal quantity (``3514800.000000``), and nulls as empty cells.
    focus: bool = False


COLUMNS: Final = {
    DatasetSchema.NATIVE: Columns("currency", "cost_total", "request_count", "tokens_total", "error_count"),
    DatasetSchema.FOCUS_1_0: Columns(
        "BillingCurrency", "BilledCost", "x_RequestCount", "ConsumedQuantity", "x_ErrorCount", focus=True
    ),
}
FOCUS_MONEY: Final = ("BilledCost", "ContractedCost", "EffectiveCost", "ListCost")
FOCUS_QUANTITIES: Final = ("ConsumedQuantity", "PricingQuantity")
FOCUS_TIMES: Final = ("BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart")
FOCUS_COUNTS: Final = ("x_RequestCount", "x_ErrorCount")
#: The columns of the FOCUS 1.0 dataset, in the file's order (service/sql/rollups.sql export_focus);
#: those not in the groups above are text.
FOCUS_ORDER: Final = [
    "AvailabilityZone",
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_RequestCount",
    "x_ErrorCount",
]


def parquet_schema(schema: DatasetSchema, time_zone: str) -> pa.Schema:
    """The Parquet columns of a dataset: money as ``decimal128(20,6)`` (the stored numeric),
    instants as timestamps in the job's zone, counts as int64."""
    import pyarrow as pa  # only the worker (and `verify` of a Parquet file) needs it

    if schema is DatasetSchema.FOCUS_1_0:
        types = {name: pa.decimal128(20, 6) for name in FOCUS_MONEY}
        types |= {name: pa.decimal128(26, 6) for name in FOCUS_QUANTITIES}
        types |= {name: pa.timestamp("us", tz="UTC") for name in FOCUS_TIMES}
        types |= {name: pa.int64() for name in FOCUS_COUNTS}
        return pa.schema([(name, types.get(name, pa.string())) for name in FOCUS_ORDER])
    return pa.schema(
        [
            ("bucket_start", pa.timestamp("us", tz=time_zone)),
            ("organization_id", pa.string()),
            ("model_id", pa.string()),
            ("request_count", pa.int64()),
            ("tokens_total", pa.int64()),
            ("error_count", pa.int64()),
            ("cost_total", pa.decimal128(20, 6)),
            ("currency", pa.string()),
        ]
    )


class Gzip:
    """One gzip member, compressed chunk by chunk; also the size and SHA-256 of the content."""

    def __init__(self, level: int = GZIP_LEVEL) -> None:
        # wbits 31: the gzip container (header with no name and mtime 0, CRC-32 and size trailer).
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._content = hashlib.sha256()
        self.content_bytes = 0

    def compress(self, chunk: bytes) -> bytes:
        self._content.update(chunk)
        self.content_bytes += len(chunk)
        return self._compressor.compress(chunk)

    def flush(self) -> bytes:
        return self._compressor.flush()

    @property
    def content_sha256(self) -> str:
        return self._content.hexdigest()
