"""Request parsing and response shapes, checked against the published JSON Schemas on examples."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from service.api.contract import path_values, query_values, validate
from service.api.routes import JOB_ID, ROUTES
from service.api.schemas import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_MODEL_ID_LENGTH,
    MAX_MODELS,
    SCHEMAS,
    page_json,
    parse_export_request,
    parse_schedule_spec,
)
from service.errors import ValidationFailed
from service.job import DatasetSchema, ExportFormat, Granularity, JobPage, JobStatus, job_json
from service.retention import months_before
from tests.support.fakes import ORG_A, make_job, schema_errors, succeeded_job

USER = "alice@example.com"


def body(**changes: Any) -> dict[str, Any]:
    """A valid request body with ``changes`` applied (a value of ``...`` removes the key)."""
    base: dict[str, Any] = {
        "timeRange": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-08T00:00:00Z"},
        "granularity": "daily",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def parsed(raw: object) -> Any:
    """What a create request's body goes through: the contract's schema, then the parser."""
    validate("CreateExportRequest", raw)
    return parse_export_request(raw, ORG_A, USER)


def rejected(raw: object) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        parsed(raw)
    return caught.value


# --- parse_export_request -----------------------------------------------------------------------


def test_valid_body_becomes_an_export_request_in_utc() -> None:
    request = parsed(body(models=["gpt-4o"]))
    assert request.org_id == ORG_A
    assert request.requested_by == USER
    assert request.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert request.end == datetime(2026, 11, 8, tzinfo=UTC)
    assert request.start.utcoffset() == timedelta(0)
    assert request.end.utcoffset() == timedelta(0)
    assert request.granularity is Granularity.DAILY
    assert request.models == ("gpt-4o",)


def test_offset_timestamps_are_converted_to_utc() -> None:
    # Given times at +02:00 and -05:30
    raw = body(timeRange={"start": "2026-11-01T02:00:00+02:00", "end": "2026-11-01T12:30:00.250-05:30"})
    # When parsed
    request = parse_export_request(raw, ORG_A, USER)
    # Then they are the same instants, expressed in UTC
    assert request.start == datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
    assert request.start.tzinfo is UTC
    assert request.end == datetime(2026, 11, 1, 18, 0, 0, 250_000, tzinfo=UTC)
    assert request.end.tzinfo is UTC


def test_nanosecond_fractions_are_accepted() -> None:
    raw = body(timeRange={"start": "2026-11-01T00:00:00.123456789Z", "end": "2026-11-02T00:00:00Z"})
    assert parse_export_request(raw, ORG_A, USER).start.microsecond == 123456


@pytest.mark.parametrize("granularity", ["hourly", "daily", "monthly"])
def test_every_granularity_is_accepted(granularity: str) -> None:
    assert parsed(body(granularity=granularity)).granularity.value == granularity


@pytest.mark.parametrize("raw", [[], "text", 42, None])
def test_body_must_be_an_object(raw: object) -> None:
    rejected(raw)


def test_unknown_top_level_field_is_rejected_by_name() -> None:
    error = rejected(body(fileFormat="csv"))
    assert "fileFormat" in error.errors
    assert "fileFormat" in error.detail


@pytest.mark.parametrize("output_format", list(ExportFormat))
def test_the_format_is_taken_and_csv_is_the_default(output_format: ExportFormat) -> None:
    assert parsed(body(format=output_format.value)).output_format is output_format
    assert parsed(body()).output_format is ExportFormat.CSV
    assert parsed(body()).output_schema is DatasetSchema.NATIVE


@pytest.mark.parametrize(("field", "value"), [("format", "xlsx"), ("format", "CSV"), ("schema", "focus-2")])
def test_an_unknown_format_or_schema_is_rejected_by_name(field: str, value: str) -> None:
    assert field in rejected(body(**{field: value})).errors


def test_unknown_time_range_field_is_rejected_by_name() -> None:
    error = rejected(
        body(timeRange={"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z", "tz": "UTC"})
    )
    assert "timeRange.tz" in error.errors


@pytest.mark.parametrize("time_range", [..., None, "2026-11-01/2026-11-02", ["a", "b"]])
def test_missing_or_malformed_time_range_is_rejected(time_range: object) -> None:
    assert "timeRange" in rejected(body(timeRange=time_range)).errors


@pytest.mark.parametrize("missing", ["start", "end"])
def test_missing_start_or_end_is_rejected(missing: str) -> None:
    time_range = {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"}
    del time_range[missing]
    assert f"timeRange.{missing}" in rejected(body(timeRange=time_range)).errors


@pytest.mark.parametrize(
    "start",
    [
        "2026-11-01T00:00:00",  # no offset
        "2026-11-01 00:00:00Z",  # space instead of T
        "2026-11-01",  # date only
        "2026-11-01T00:00Z",  # no seconds
        "2026-02-30T00:00:00Z",  # no such day
        "2026-11-01T25:00:00Z",  # no such hour
        1793491200,  # a number
        None,
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-23:59",  # after year 9999 in UTC
    ],
)
def test_malformed_timestamps_are_rejected(start: object) -> None:
    error = rejected(body(timeRange={"start": start, "end": "2026-11-02T00:00:00Z"}))
    assert "timeRange.start" in error.errors


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-11-02T00:00:00Z", "2026-11-01T00:00:00Z"),
        ("2026-11-01T00:00:00Z", "2026-11-01T00:00:00Z"),
        ("2026-11-01T02:00:00+02:00", "2026-11-01T00:00:00Z"),  # the same instant
    ],
)
def test_start_must_be_before_end(start: str, end: str) -> None:
    assert "timeRange" in rejected(body(timeRange={"start": start, "end": end})).errors


@pytest.mark.parametrize(
    ("start", "end"),
    [("2026-11-01T00:10:00Z", "2026-11-01T00:50:00Z"), ("2026-11-01T00:30:00Z", "2026-11-01T01:29:59Z")],
)
def test_a_range_that_covers_no_whole_hour_is_rejected_saying_so(start: str, end: str) -> None:
    error = rejected(body(timeRange={"start": start, "end": end}))
    assert error.errors == {"timeRange": "covers no whole hour"}
    assert "whole hour" in error.detail


def test_the_job_says_which_hours_it_covers() -> None:
    job = make_job(
        time_range_start=datetime(2026, 11, 1, 0, 30, tzinfo=UTC),
        time_range_end=datetime(2026, 11, 1, 5, 45, tzinfo=UTC),
    )
    doc = job_json(job)
    assert doc["timeRange"] == {"start": "2026-11-01T00:30:00Z", "end": "2026-11-01T05:45:00Z"}
    assert doc["coverage"] == {"start": "2026-11-01T01:00:00Z", "end": "2026-11-01T05:00:00Z"}
    assert schema_errors(doc, SCHEMAS["ExportJob"]) == []


@pytest.mark.parametrize(
    ("zone", "why"),
    [
        ("Asia/Kolkata", "offset not a whole number of hours"),  # +05:30
        ("Asia/Kathmandu", "offset not a whole number of hours"),  # +05:45
        ("Australia/Adelaide", "offset not a whole number of hours"),  # +10:30 / +09:30
        ("Mars/Olympus_Mons", "unknown time zone"),
        ("../../etc/passwd", "unknown time zone"),
        ("", "must be at least 1 characters"),
        (5, "must be a string"),
    ],
)
def test_a_time_zone_that_cannot_bucket_hours_is_rejected_naming_it(zone: object, why: str) -> None:
    assert rejected(body(timeZone=zone)).errors == {"timeZone": why}


def test_a_time_zone_is_kept_and_utc_is_the_default() -> None:
    assert parsed(body()).time_zone == "UTC"
    assert parsed(body(timeZone="Europe/Berlin")).time_zone == "Europe/Berlin"
    assert parsed(body(timeZone="America/New_York")).time_zone == "America/New_York"


def test_exactly_31_days_is_accepted() -> None:
    request = parsed(body(timeRange={"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}))
    assert request.end - request.start == timedelta(days=31)


def test_31_days_and_one_second_is_rejected() -> None:
    error = rejected(body(timeRange={"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:01Z"}))
    assert "timeRange" in error.errors


def test_range_length_is_measured_on_the_clocks_of_the_time_zone() -> None:
    # In UTC (the default), 31 days and an hour are too long, whatever the offsets written.
    error = rejected(body(timeRange={"start": "2026-10-01T00:00:00+01:00", "end": "2026-11-01T00:00:00Z"}))
    assert "timeRange" in error.errors
    # October in Berlin is 31 days on its clocks, though 31 days and an hour pass (clocks go back).
    october = {"start": "2026-10-01T00:00:00+02:00", "end": "2026-11-01T00:00:00+01:00"}
    request = parsed(body(timeRange=october, timeZone="Europe/Berlin"))
    assert request.end - request.start == timedelta(days=31, hours=1)
    # ... and a day more is too long there too.
    longer = {"start": "2026-09-30T00:00:00+02:00", "end": "2026-11-01T00:00:00+01:00"}
    assert "timeRange" in rejected(body(timeRange=longer, timeZone="Europe/Berlin")).errors


@pytest.mark.parametrize(
    "granularity", [..., None, "weekly", "Daily", "", 1, ["daily"], {"daily": True}], ids=repr
)
def test_missing_or_invalid_granularity_is_rejected(granularity: object) -> None:
    # A list or object must be a validation error too, not a crash (unhashable in a set lookup).
    assert "granularity" in rejected(body(granularity=granularity)).errors


@pytest.mark.parametrize("models", [..., None, []])
def test_absent_null_or_empty_models_mean_every_model(models: object) -> None:
    assert parsed(body(models=models)).models is None


def test_duplicate_models_are_removed_keeping_order() -> None:
    request = parsed(body(models=["b", "a", "b", "c", "a"]))
    assert request.models == ("b", "a", "c")


@pytest.mark.parametrize(
    ("models", "field"),
    [
        ("gpt-4o", "models"),
        ({"gpt-4o": 1}, "models"),
        (["gpt-4o", 7], "models[1]"),
        ([None], "models[0]"),
        (["ok", ""], "models[1]"),
        (["x" * (MAX_MODEL_ID_LENGTH + 1)], "models[0]"),
        (["nul\x00byte"], "models[0]"),
        ([f"m{i}" for i in range(MAX_MODELS + 1)], "models"),
    ],
)
def test_invalid_models_are_rejected(models: object, field: str) -> None:
    assert field in rejected(body(models=models)).errors


def test_longest_model_id_and_most_models_are_accepted() -> None:
    longest = parsed(body(models=["x" * MAX_MODEL_ID_LENGTH]))
    assert longest.models == ("x" * MAX_MODEL_ID_LENGTH,)
    most = parsed(body(models=[f"m{i}" for i in range(MAX_MODELS)]))
    assert most.models is not None
    assert len(most.models) == MAX_MODELS


# --- the request schema agrees with the parser on examples --------------------------------------

VALID_BODIES = [
    body(),
    body(models=None),
    body(models=[]),
    body(models=["gpt-4o", "claude-haiku"], granularity="hourly"),
    body(timeRange={"start": "2026-11-01T00:00:00+05:00", "end": "2026-11-01T01:00:00Z"}),
]
INVALID_BODIES = [
    body(extra=1),
    body(granularity=...),
    body(timeRange=...),
    body(granularity="weekly"),
    body(models=[""]),
    body(models=["x" * (MAX_MODEL_ID_LENGTH + 1)]),
    body(models="gpt-4o"),
    body(timeRange={"start": "2026-11-01T00:00:00Z"}),
    body(timeRange={"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z", "x": 1}),
]


@pytest.mark.parametrize("raw", VALID_BODIES)
def test_valid_examples_satisfy_schema_and_parser(raw: dict[str, Any]) -> None:
    assert schema_errors(raw, SCHEMAS["CreateExportRequest"]) == []
    parsed(raw)


@pytest.mark.parametrize("raw", INVALID_BODIES)
def test_invalid_examples_fail_schema_and_parser(raw: dict[str, Any]) -> None:
    assert schema_errors(raw, SCHEMAS["CreateExportRequest"]) != []
    rejected(raw)


# --- the list's query, as the contract reads it ------------------------------------------------

LIST = next(route for route in ROUTES if route.operation_id == "listExports")


def parse_list_query(query: dict[str, str]) -> tuple[JobStatus | None, int, str | None]:
    values = query_values(LIST, query)
    status = values.get("status")
    return (JobStatus(status) if status else None), values["limit"], values.get("cursor")


def test_list_query_defaults() -> None:
    assert parse_list_query({}) == (None, DEFAULT_LIMIT, None)
    assert DEFAULT_LIMIT == 50


def test_list_query_values() -> None:
    assert parse_list_query({"status": "failed", "limit": "7", "cursor": "abc"}) == (
        JobStatus.FAILED,
        7,
        "abc",
    )


def test_list_query_limit_bounds_are_inclusive() -> None:
    assert parse_list_query({"limit": "1"})[1] == 1
    assert parse_list_query({"limit": str(MAX_LIMIT)})[1] == MAX_LIMIT == 200


@pytest.mark.parametrize("limit", ["0", "201", "abc", "-1", "1.5", " 5", "²", "1e2", "9" * 40])
def test_bad_limit_is_rejected(limit: str) -> None:
    # "²" is a digit to str.isdigit() but not to int(): it must still be a 400, not a crash.
    with pytest.raises(ValidationFailed) as caught:
        parse_list_query({"limit": limit})
    assert "limit" in caught.value.errors


@pytest.mark.parametrize("status", ["done", "PENDING", "all", ""])
def test_unknown_status_is_rejected(status: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_list_query({"status": status})
    assert "status" in caught.value.errors


def test_unknown_query_parameter_is_rejected_by_name() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_list_query({"limit": "5", "page": "2"})
    assert "page" in caught.value.errors


# --- job_json / page_json -----------------------------------------------------------------------

DOCUMENTED_FIELDS = {
    "jobId",
    "orgId",
    "requestedBy",
    "status",
    "granularity",
    "timeRange",
    "models",
    "initiatedAt",
    "completedAt",
    "expiresAt",
    "rowCount",
    "checksum",
    "outputUri",
    "errorMessage",
}


def test_job_json_of_a_pending_job() -> None:
    job = make_job(models=("gpt-4o", "claude-haiku"))
    doc = job_json(job)
    assert set(doc) >= DOCUMENTED_FIELDS
    assert doc["jobId"] == str(job.job_id)
    assert doc["orgId"] == str(ORG_A)
    assert doc["requestedBy"] == job.requested_by
    assert doc["status"] == "pending"
    assert doc["granularity"] == "daily"
    assert doc["timeRange"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-11-08T00:00:00Z"}
    assert doc["models"] == ["gpt-4o", "claude-haiku"]
    assert doc["initiatedAt"] == "2026-11-08T09:30:00Z"
    for absent in ("completedAt", "expiresAt", "rowCount", "checksum", "outputUri", "errorMessage"):
        assert doc[absent] is None, absent


def test_job_json_times_are_utc_with_z_even_from_other_offsets() -> None:
    # Given times held with a non-UTC offset
    plus_two = datetime(2026, 11, 10, 16, 0, 0, 123000, tzinfo=timezone(timedelta(hours=2)))
    job = succeeded_job(completed_at=plus_two, expires_at=plus_two + timedelta(days=1))
    doc = job_json(job)
    assert doc["completedAt"] == "2026-11-10T14:00:00.123000Z"
    assert doc["expiresAt"] == "2026-11-11T14:00:00.123000Z"
    time_range = doc["timeRange"]
    assert isinstance(time_range, dict)
    for value in (doc["initiatedAt"], doc["completedAt"], doc["expiresAt"], *time_range.values()):
        assert isinstance(value, str)
        assert value.endswith("Z"), value


def test_job_json_of_a_succeeded_job_carries_the_output() -> None:
    job = succeeded_job()
    doc = job_json(job)
    assert doc["status"] == "succeeded"
    assert doc["rowCount"] == job.row_count
    assert doc["byteCount"] == job.byte_count
    assert doc["checksum"] == job.checksum
    assert doc["outputUri"] == job.output_uri
    assert doc["models"] is None


def test_job_json_of_a_new_job_has_no_attempts_and_no_retry_time() -> None:
    doc = job_json(make_job())
    assert (doc["attempts"], doc["nextAttemptAt"]) == (0, None)


def test_job_json_of_a_job_waiting_for_a_retry_says_when_and_after_how_many_attempts() -> None:
    retry_at = datetime(2026, 11, 8, 9, 31, 30, tzinfo=UTC)
    job = make_job(attempt=1, available_at=retry_at, error_message="attempt 1 failed: S3 down")
    doc = job_json(job)
    assert (doc["status"], doc["attempts"], doc["nextAttemptAt"]) == ("pending", 1, "2026-11-08T09:31:30Z")
    assert doc["errorMessage"] == "attempt 1 failed: S3 down"


def test_job_json_attempts_leave_out_hand_backs_and_only_a_pending_job_has_a_retry_time() -> None:
    # Given a job handed back once at a worker shutdown, now running its second claim
    running = make_job(status=JobStatus.RUNNING, attempt=2, handbacks=1)
    assert job_json(running)["attempts"] == 1
    # A job cancelled while it waited for a retry keeps the column, but waits for nothing
    retry_at = datetime(2026, 11, 8, 9, 31, 30, tzinfo=UTC)
    cancelled = make_job(status=JobStatus.CANCELLED, attempt=1, available_at=retry_at)
    assert (job_json(cancelled)["attempts"], job_json(cancelled)["nextAttemptAt"]) == (1, None)


def test_job_json_keys_equal_the_schema_required_keys() -> None:
    required, properties = SCHEMAS["ExportJob"]["required"], SCHEMAS["ExportJob"]["properties"]
    assert isinstance(required, list)
    assert isinstance(properties, dict)
    assert set(job_json(make_job())) == set(required)
    assert set(required) == set(properties)


@pytest.mark.parametrize(
    "job",
    [
        make_job(),
        make_job(models=("a", "b"), status=JobStatus.RUNNING, attempt=1),
        make_job(status=JobStatus.FAILED, error_message="S3 upload failed: AccessDenied"),
        succeeded_job(),
        succeeded_job(row_count=0, byte_count=0),
    ],
)
def test_job_json_satisfies_the_export_job_schema(job: Any) -> None:
    assert schema_errors(job_json(job), SCHEMAS["ExportJob"]) == []


def test_the_schema_check_can_fail() -> None:
    # The validator must catch a wrong shape, or the schema tests above prove nothing.
    doc = job_json(succeeded_job())
    doc["checksum"] = "NOT-HEX"
    doc["status"] = "done"
    del doc["orgId"]
    errors = schema_errors(doc, SCHEMAS["ExportJob"])
    assert len(errors) == 3, errors


def test_page_json_satisfies_the_page_schema() -> None:
    page = JobPage(items=(make_job(), succeeded_job()), next_cursor="opaque")
    doc = page_json(page)
    assert schema_errors(doc, SCHEMAS["ExportJobPage"]) == []
    items = doc["items"]
    assert isinstance(items, list)
    assert [item["jobId"] for item in items] == [str(j.job_id) for j in page.items]
    assert doc["nextCursor"] == "opaque"
    assert page_json(JobPage(items=(), next_cursor=None)) == {"items": [], "nextCursor": None}


def test_job_json_ids_are_uuids() -> None:
    job = make_job()
    doc = job_json(job)
    assert uuid.UUID(str(doc["jobId"])) == job.job_id
    assert uuid.UUID(str(doc["orgId"])) == ORG_A


def test_a_start_before_the_retention_window_is_rejected_with_the_earliest_start() -> None:
    # Given a clock at 2026-11-29 and 13 months of retention, the earliest start is 2025-10-29
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    too_old = {
        "timeRange": {"start": "2025-10-29T11:59:59Z", "end": "2025-11-01T00:00:00Z"},
        "granularity": "daily",
    }
    with pytest.raises(ValidationFailed) as rejected_:
        parse_export_request(too_old, ORG_A, "alice", retention_months=13, now=now)
    assert "timeRange.start" in rejected_.value.errors
    assert "2025-10-29T12:00:00Z" in rejected_.value.detail
    oldest = {
        "timeRange": {"start": "2025-10-29T12:00:00Z", "end": "2025-11-01T00:00:00Z"},
        "granularity": "daily",
    }
    assert parse_export_request(oldest, ORG_A, "alice", retention_months=13, now=now).start == now.replace(
        year=2025, month=10
    )


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 29, tzinfo=UTC), datetime(2025, 10, 29, tzinfo=UTC)),
        (datetime(2026, 3, 31, tzinfo=UTC), datetime(2025, 2, 28, tzinfo=UTC)),  # clamped to month end
        (datetime(2027, 1, 15, tzinfo=UTC), datetime(2025, 12, 15, tzinfo=UTC)),  # across a year
    ],
)
def test_months_before_counts_calendar_months(moment: datetime, expected: datetime) -> None:
    assert months_before(moment, 13) == expected


def test_a_focus_dataset_is_in_utc() -> None:
    assert parsed(body(schema="focus-1.0")).output_schema is DatasetSchema.FOCUS_1_0
    error = rejected(body(schema="focus-1.0", timeZone="Europe/Berlin"))
    assert error.errors == {"timeZone": "must be UTC with schema focus-1.0"}
    assert "FOCUS dataset is in UTC" in error.detail


@pytest.mark.parametrize(
    "raw",
    [
        str(uuid.uuid4()),
        str(uuid.uuid4()).upper(),
        uuid.uuid4().hex,  # no hyphens
        "{" + str(uuid.uuid4()) + "}",
        "urn:uuid:" + str(uuid.uuid4()),
        str(uuid.uuid4())[:-1],
        "0b6f3c2e-8f57-4a4e-9d1c-0b6f3c2e8f5g",
        "",
    ],
)
def test_a_path_id_is_accepted_exactly_when_its_schema_would_accept_it(raw: str) -> None:
    route = next(r for r in ROUTES if JOB_ID in r.parameters)
    valid = JOB_ID.checker.is_valid(raw)  # the JSON Schema validator itself
    match = {
        p.name: (raw if p is JOB_ID else str(uuid.uuid4())) for p in route.parameters if p.location == "path"
    }
    if valid:
        assert path_values(route, match)[JOB_ID.name] == uuid.UUID(raw)
    else:
        with pytest.raises(ValidationFailed):
            path_values(route, match)


def test_a_schedule_body_becomes_its_spec_with_the_defaults() -> None:
    spec = parse_schedule_spec({"cadence": "weekly", "period": "previous_week", "granularity": "daily"})
    assert (spec.recurrence.time_zone, spec.recurrence.run_at_hour, spec.enabled) == ("UTC", 6, True)
    assert (spec.output_format, spec.models) == (ExportFormat.CSV, None)


def test_a_whole_number_written_as_a_float_is_an_hour() -> None:
    # JSON Schema's "integer" accepts 6.0; the calendar and the smallint column need 6.
    spec = parse_schedule_spec(
        {"cadence": "daily", "period": "previous_day", "granularity": "daily", "runAtHour": 6.0}
    )
    assert spec.recurrence.run_at_hour == 6
    assert type(spec.recurrence.run_at_hour) is int


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"timeZone": "Asia/Kathmandu"}, "timeZone"),
        ({"schema": "focus-1.0", "timeZone": "Europe/Paris"}, "timeZone"),
    ],
)
def test_a_schedule_refuses_what_its_exports_could_not_be(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_schedule_spec({"cadence": "daily", "period": "previous_day", "granularity": "daily", **change})
    assert field in refused.value.errors
