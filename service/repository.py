"""The one module that talks to PostgreSQL.

Job lifecycle queries are compare-and-set updates: each names the status (and, once claimed, the
attempt) it expects, so a duplicate message or a stale attempt changes nothing. Driver errors that
mean "the database is not there" become :class:`~service.errors.DatabaseUnavailable`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from service.errors import (
    Conflict,
    DatabaseUnavailable,
    IdempotencyKeyReused,
    TooManyActiveExports,
    ValidationFailed,
)
from service.job import (
    Caller,
    Created,
    DatasetSchema,
    Event,
    EventPage,
    ExportFormat,
    ExportOutput,
    ExportRequest,
    Granularity,
    IdempotencyKey,
    Job,
    JobBacklog,
    JobPage,
    JobStatus,
    Lease,
)
from service.retention import RollupTable
from service.rollups import RollupTables, TableFacts, problems
from service.schedule import SCHEDULE_OVERDUE_SECONDS, Schedule
from service.sql import QUERIES, rollup_queries
from service.webhook import (
    Attempt,
    Delivery,
    DeliveryPage,
    DeliveryStatus,
    Pending,
    Webhook,
    WebhookChange,
    WebhookEvent,
)

#: Errors that mean PostgreSQL is unreachable or the connection died, as opposed to a bad query.
CONNECTION_ERRORS: Final = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    TimeoutError,
)

Sink = Callable[[bytes], Awaitable[None]]
log = logging.getLogger(__name__)
#: How long an export waits for the read replica to replay past its job's creation, and how often
#: it looks meanwhile, before it reads the primary instead.
REPLICA_WAIT_SECONDS: Final = 10.0
REPLICA_POLL_SECONDS: Final = 0.2
#: What a 429 tells the client to wait before trying again.
RETRY_AFTER_SECONDS: Final = 30
#: The retention delete of each rollup table.
_PRUNE_QUERY: Final = MappingProxyType(
    {RollupTable.HOURLY: "prune_hourly_rollups", RollupTable.DAILY: "prune_daily_rollups"}
)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset on release. asyncpg's default sends ``SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL;``, one round trip per release (half of a GET job's). The
    queries here leave nothing in the session to undo: locks are transaction-scoped and settings
    transaction-local (the migration lock is taken on a connection of its own). An open
    transaction is still rolled back by asyncpg before this runs."""


async def create_pool(database_url: str, *, max_size: int) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            database_url,
            min_size=1,
            max_size=max_size,
            command_timeout=60,
            timeout=10,
            reset=_keep_session,
        )
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool


#: The one form encode_cursor writes: a UTC time to the microsecond. Anything else in a cursor
#: was not made here (a forged year-1 time with an offset once overflowed into a 500).
_CURSOR_TIME: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?\+00:00", re.ASCII)


def encode_cursor(job: Job) -> str:
    raw = orjson.dumps({"t": job.initiated_at.astimezone(UTC).isoformat(), "id": str(job.job_id)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor from :func:`encode_cursor` holds; a 400 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
        if not isinstance(data, dict) or set(data) != {"t", "id"}:
            raise ValueError("malformed cursor")
        when, job_id = data["t"], data["id"]
        if not isinstance(when, str) or not _CURSOR_TIME.fullmatch(when) or not isinstance(job_id, str):
            raise ValueError("malformed cursor")
        return datetime.fromisoformat(when), uuid.UUID(job_id)
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        raise ValidationFailed(
            "cursor is not one this API returned", errors={"cursor": "invalid cursor"}
        ) from None


def encode_event_cursor(event_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"e": event_id})).decode().rstrip("=")


def decode_event_cursor(cursor: str) -> int:
    """The event id an events cursor holds; a 400 for anything :func:`encode_event_cursor` never
    wrote."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        data = None
    event_id = data.get("e") if isinstance(data, dict) and set(data) == {"e"} else None
    if isinstance(event_id, bool) or not isinstance(event_id, int) or not 0 < event_id < 2**63:
        raise ValidationFailed("cursor is not one this API returned", errors={"cursor": "invalid cursor"})
    return event_id


def _new_job(request: ExportRequest, request_id: str | None) -> tuple[object, ...]:
    """A new job's id and the request's fields, in create_job's (and create_scheduled_job's) order."""
    return (
        uuid.uuid4(),
        request.org_id,
        request.requested_by,
        request.start,
        request.end,
        request.granularity.value,
        list(request.models) if request.models else None,
        request_id,
        request.time_zone,
        request.output_format.value,
        request.output_schema.value,
    )


async def rollup_table_problems(conn: asyncpg.Connection, tables: RollupTables) -> list[str]:
    found: list[str] = []
    for table in RollupTable:
        name = tables.name(table)
        row = await conn.fetchrow(QUERIES["rollup_table_facts"], name)
        assert row is not None
        facts = TableFacts(
            name,
            row["present"],
            orjson.loads(row["columns"]),
            row["ordered"],
            tuple(orjson.loads(row["unreadable"])),
            row["view"],
            row["prunable"],
            row["deletable"],
        )
        found += problems(facts, pruned=tables.pruned)
    return found


async def check_rollup_tables(database_url: str, tables: RollupTables) -> list[str]:
    """What an export would miss in the rollup tables, asked once (a process's start)."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return await rollup_table_problems(conn, tables)
    finally:
        await conn.close()


def whole_days(first: datetime, last: datetime) -> tuple[datetime, datetime]:
    """The whole UTC days inside [first, last), as covered_days (rollups.sql) takes them: from the
    first midnight at or after ``first`` to the last at or before ``last`` (none when they
    cross: the empty range at ``first``, every hour then counted from the hourly rollups)."""
    start_day = first.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = start_day if start_day == first else start_day + timedelta(days=1)
    end = last.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (start, end) if start < end else (first, first)


class JobRepository:
    """Export jobs and the rollup rows they export (and prune past the retention window).

    With a ``read_pool`` (DATABASE_READ_URL, a streaming replica) exports stream their rows from
    it, while every job write stays on ``pool``: but only once the replica shows the job's own
    row, which proves it replayed everything committed before the job was created. A replica
    still behind after ``replica_wait`` seconds is passed over for the primary, and
    ``on_replica_behind`` is called (the metrics count it). ``tables`` are where the rollups are
    (ROLLUP_HOURLY_TABLE, ROLLUP_DAILY_TABLE).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        read_pool: asyncpg.Pool | None = None,
        *,
        tables: RollupTables,
        replica_wait: float = REPLICA_WAIT_SECONDS,
        on_replica_behind: Callable[[], object] | None = None,
    ) -> None:
        self._pool = pool
        self._tables = tables
        self._sql = rollup_queries(tables.placeholders())
        self._read_pool = read_pool
        self._replica_wait = replica_wait
        self._on_replica_behind = on_replica_behind

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL is unavailable: {exc}") from exc

    async def _one(self, name: str, *args: object) -> Job | None:
        # The pool's own fetchrow (acquire, query, release): the hottest read, GET job, without
        # the generator-based context manager's cost.
        try:
            row = await self._pool.fetchrow(QUERIES[name], *args)
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
        return Job.from_row(row) if row is not None else None

    async def backlog(self) -> JobBacklog:
        async with self._connection() as conn:
            row = await conn.fetchrow(QUERIES["job_backlog"], SCHEDULE_OVERDUE_SECONDS)
        assert row is not None
        return JobBacklog(
            row["pending"],
            row["running"],
            row["oldest_pending_seconds"],
            row["overdue_schedules"],
            row["overdue_webhook_deliveries"],
        )

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval(QUERIES["ping"])

    async def create(
        self,
        request: ExportRequest,
        caller: Caller | None = None,
        *,
        idempotency: IdempotencyKey | None = None,
        max_active: int | None = None,
    ) -> Created:
        """Insert the pending job (``Created.new``); its 'created' event (with the
        caller's address) is written by the trigger in the same transaction.

        Creation is serialised per org (a transaction-scoped advisory lock), which makes the two
        rules race-safe: a live Idempotency-Key returns the job it created (``new`` False, or
        IdempotencyKeyReused for a different request), and an org with ``max_active`` pending or
        running jobs gets TooManyActiveExports.
        """
        async with self._connection() as conn, conn.transaction():
            await conn.execute(QUERIES["lock_org_creates"], request.org_id)
            if idempotency is not None:
                seen = await conn.fetchrow(
                    QUERIES["find_idempotent_request"], request.org_id, idempotency.key
                )
                if seen is not None:
                    if seen["request_hash"] != idempotency.request_hash:
                        raise IdempotencyKeyReused(
                            "this Idempotency-Key was used in the last 24 hours for a different request"
                        )
                    existing = await conn.fetchrow(QUERIES["get_job"], request.org_id, seen["job_id"])
                    assert existing is not None
                    return Created(Job.from_row(existing), new=False)
            if max_active is not None:
                active = await conn.fetchval(QUERIES["count_active_jobs"], request.org_id)
                if active >= max_active:
                    raise TooManyActiveExports(
                        f"this org already has {active} exports pending or running (at most "
                        f"{max_active}); retry when one has finished",
                        retry_after=RETRY_AFTER_SECONDS,
                    )
            if caller is not None:
                await self._set_caller(conn, caller)
            row = await conn.fetchrow(
                QUERIES["create_job"], *_new_job(request, caller.request_id if caller is not None else None)
            )
            assert row is not None
            if idempotency is not None:
                await conn.execute(
                    QUERIES["remember_idempotent_request"],
                    request.org_id,
                    idempotency.key,
                    idempotency.request_hash,
                    row["job_id"],
                )
        return Created(Job.from_row(row), new=True)

    async def record_download(
        self, job: Job, caller: Caller, valid_seconds: int, *, window_seconds: float
    ) -> None:
        """Record a download link issued to ``caller``: one more in the count of the caller's
        ``download_url_issued`` event of the last ``window_seconds`` (same subject, address and
        user agent), or a new event."""
        user_agent = (caller.user_agent or "")[:512] or None
        async with self._connection() as conn, conn.transaction():
            await conn.execute(QUERIES["lock_job_events"], job.job_id)
            counted = await conn.fetchval(
                QUERIES["count_download"],
                job.job_id,
                caller.subject,
                caller.client_ip,
                user_agent,
                window_seconds,
            )
            if counted is None:
                await conn.execute(
                    QUERIES["record_event"],
                    job.job_id,
                    "download_url_issued",
                    caller.subject,
                    caller.client_ip,
                    user_agent,
                    orjson.dumps({"validSeconds": valid_seconds, "count": 1}).decode(),
                )

    async def events(
        self, org_id: uuid.UUID, job_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> EventPage:
        """A page of the job's trail, oldest first (nothing for another org's job)."""
        after = decode_event_cursor(cursor) if cursor else None
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["list_events"], org_id, job_id, after, limit + 1)
        items = tuple(
            Event(
                event_id=row["event_id"],
                job_id=row["job_id"],
                event=row["event"],
                actor=row["actor"],
                client_ip=row["client_ip"],
                user_agent=row["user_agent"],
                attempt=row["attempt"],
                details=orjson.loads(row["details"]),
                occurred_at=row["occurred_at"],
            )
            for row in rows[:limit]
        )
        more = len(rows) > limit
        return EventPage(items=items, next_cursor=encode_event_cursor(items[-1].event_id) if more else None)

    async def get(self, org_id: uuid.UUID, job_id: uuid.UUID) -> Job | None:
        return await self._one("get_job", org_id, job_id)

    async def get_manifest(self, org_id: uuid.UUID, job_id: uuid.UUID) -> tuple[Job, bytes | None] | None:
        """One job of one org and the manifest it wrote (``None`` before it succeeded)."""
        async with self._connection() as conn:
            row = await conn.fetchrow(QUERIES["get_manifest"], org_id, job_id)
        if row is None:
            return None
        text = row["manifest_text"]
        return Job.from_row(row), text.encode() if text is not None else None

    async def list_page(
        self,
        org_id: uuid.UUID,
        *,
        status: JobStatus | None,
        limit: int,
        cursor: str | None,
        schedule_id: uuid.UUID | None = None,
    ) -> JobPage:
        after_time, after_id = decode_cursor(cursor) if cursor else (None, None)
        async with self._connection() as conn:
            rows = await conn.fetch(
                QUERIES["list_jobs"],
                org_id,
                status.value if status else None,
                after_time,
                after_id,
                limit + 1,
                schedule_id,
            )
        jobs = tuple(Job.from_row(row) for row in rows[:limit])
        more = len(rows) > limit
        return JobPage(items=jobs, next_cursor=encode_cursor(jobs[-1]) if more else None)

    async def claim(self, job_id: uuid.UUID, lease_seconds: float, claimed_by: str) -> Job | None:
        """pending -> running with a lease; ``None`` when the job is not claimable (already
        claimed, finished, or waiting out a retry backoff). The row returned still carries the
        previous attempt's ``upload_id``, if any, for the new attempt to abort."""
        return await self._one("claim_job", job_id, lease_seconds, claimed_by)

    async def _owned(self, name: str, job: Job, *args: object) -> bool:
        async with self._connection() as conn:
            return await conn.fetchval(QUERIES[name], job.job_id, job.attempt, *args) is not None

    async def renew_lease(self, job: Job, lease_seconds: float) -> Lease:
        """Extend the attempt's lease; say whether it lost the job or is asked to cancel."""
        async with self._connection() as conn:
            row = await conn.fetchrow(QUERIES["renew_lease"], job.job_id, job.attempt, lease_seconds)
        if row is None:
            return Lease.LOST
        return Lease.CANCEL_REQUESTED if row["cancel_requested"] else Lease.HELD

    async def cancel(self, org_id: uuid.UUID, job_id: uuid.UUID, caller: Caller) -> Job | None:
        """Cancel a pending job, or ask a running one to stop; ``None`` if unknown or finished."""
        async with self._connection() as conn, conn.transaction():
            await self._set_caller(conn, caller)
            row = await conn.fetchrow(QUERIES["cancel_job"], org_id, job_id)
        return Job.from_row(row) if row is not None else None

    async def cancel_running(self, job: Job) -> Job | None:
        """running -> cancelled by the attempt that stopped on request."""
        return await self._one("cancel_running_job", job.job_id, job.attempt)

    async def cancel_lapsed(self, limit: int) -> list[uuid.UUID]:
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["cancel_lapsed_jobs"], limit)
        return [row["job_id"] for row in rows]

    @staticmethod
    async def _set_caller(conn: asyncpg.Connection, caller: Caller) -> None:
        """Transaction-local facts for the event trigger ('created', 'cancelled')."""
        await conn.fetchrow(
            QUERIES["set_caller"], caller.client_ip or "", (caller.user_agent or "")[:512], caller.subject
        )

    async def set_upload_id(self, job: Job, upload_id: str) -> bool:
        return await self._owned("set_upload_id", job, upload_id)

    async def clear_upload_id(self, job_id: uuid.UUID, upload_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(QUERIES["clear_upload_id"], job_id, upload_id)

    async def complete(self, job: Job, output: ExportOutput, ttl_seconds: float) -> Job | None:
        """running -> succeeded for this attempt; ``None`` if the attempt no longer owns the job."""
        return await self._one(
            "complete_job",
            job.job_id,
            job.attempt,
            output.output_uri,
            output.checksum,
            output.row_count,
            output.byte_count,
            ttl_seconds,
            output.manifest.decode(),
            output.manifest_checksum,
        )

    async def fail(self, job: Job, reason: str) -> Job | None:
        """running -> failed for this attempt; ``None`` if the attempt no longer owns the job."""
        return await self._one("fail_job", job.job_id, job.attempt, reason[:2000])

    async def retry(self, job: Job, reason: str, backoff_seconds: float) -> Job | None:
        """running -> pending, claimable after the backoff; ``None`` if the attempt lost the job."""
        return await self._one("retry_job", job.job_id, job.attempt, reason[:2000], backoff_seconds)

    async def hand_back(self, job: Job) -> Job | None:
        """running -> pending without charging an attempt (worker shutdown)."""
        return await self._one("hand_back_job", job.job_id, job.attempt)

    async def requeue_lapsed(self, max_attempts: int, limit: int) -> list[uuid.UUID]:
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["requeue_lapsed_jobs"], max_attempts, limit)
        return [row["job_id"] for row in rows]

    async def fail_lapsed(self, max_attempts: int, limit: int) -> list[Job]:
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["fail_lapsed_jobs"], max_attempts, limit)
        return [Job.from_row(row) for row in rows]

    async def unfinished_job_ids(self, job_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["unfinished_job_ids"], job_ids)
        return {row["job_id"] for row in rows}

    async def leftover_uploads(self, limit: int) -> list[Job]:
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["jobs_with_leftover_uploads"], limit)
        return [Job.from_row(row) for row in rows]

    async def due_for_expiry(self, limit: int) -> list[Job]:
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["jobs_due_for_expiry"], limit)
        return [Job.from_row(row) for row in rows]

    async def expire(self, job_id: uuid.UUID) -> Job | None:
        return await self._one("expire_job", job_id)

    async def stale_pending(
        self, unpublished_after: float, unclaimed_after: float, limit: int
    ) -> list[uuid.UUID]:
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["stale_pending_jobs"], unpublished_after, unclaimed_after, limit)
        return [row["job_id"] for row in rows]

    async def mark_enqueued(self, job_id: uuid.UUID) -> None:
        async with self._connection() as conn:
            await conn.execute(QUERIES["mark_enqueued"], job_id)

    async def prune_rollups(self, table: RollupTable, cutoff: datetime, limit: int) -> int:
        """Delete at most ``limit`` rows of ``table`` whose ``bucket_start`` is before ``cutoff``,
        oldest first (one statement, one index range scan); return how many were deleted."""
        async with self._connection() as conn:
            status = await conn.execute(self._sql[_PRUNE_QUERY[table]], cutoff, limit)
        # The status string is "DELETE <rows>".
        return int(status.split()[-1])

    async def forget_idempotency_keys(self, limit: int) -> int:
        """Delete at most ``limit`` idempotency keys older than 24 hours; return how many."""
        async with self._connection() as conn:
            status = await conn.execute(QUERIES["forget_idempotency_keys"], limit)
        return int(status.split()[-1])

    # --- schedules ---------------------------------------------------------------------------

    @staticmethod
    def _schedule_fields(schedule: Schedule) -> tuple[object, ...]:
        """What a schedule does and when it next runs, in create_schedule's and update_schedule's
        order after the ids."""
        spec, r = schedule.spec, schedule.recurrence
        return (
            r.cadence.value,
            r.period.value,
            r.time_zone,
            r.run_at_hour,
            spec.granularity.value,
            list(spec.models) if spec.models else None,
            spec.output_format.value,
            spec.output_schema.value,
            spec.enabled,
            schedule.next_run_at,
        )

    async def create_schedule(self, schedule: Schedule, max_per_org: int) -> Schedule:
        """Insert ``schedule``; Conflict when its org already has ``max_per_org`` (serialised per
        org, as job creation is)."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(QUERIES["lock_org_creates"], schedule.org_id)
            count = await conn.fetchval(QUERIES["count_schedules"], schedule.org_id)
            if count >= max_per_org:
                raise Conflict(
                    f"this org already has {count} export schedules (at most {max_per_org}); delete one first"
                )
            row = await conn.fetchrow(
                QUERIES["create_schedule"],
                schedule.schedule_id,
                schedule.org_id,
                schedule.created_by,
                *self._schedule_fields(schedule),
            )
        assert row is not None
        return Schedule.from_row(row)

    async def get_schedule(self, org_id: uuid.UUID, schedule_id: uuid.UUID) -> Schedule | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(QUERIES["get_schedule"], org_id, schedule_id)
        return Schedule.from_row(row) if row is not None else None

    async def list_schedules(self, org_id: uuid.UUID, limit: int) -> list[Schedule]:
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["list_schedules"], org_id, limit)
        return [Schedule.from_row(row) for row in rows]

    async def update_schedule(self, schedule: Schedule) -> Schedule | None:
        """Write ``schedule`` over the row it was read from (its ``updated_at``); ``None`` when the
        row changed since, or is gone."""
        async with self._connection() as conn:
            row = await conn.fetchrow(
                QUERIES["update_schedule"],
                schedule.org_id,
                schedule.schedule_id,
                *self._schedule_fields(schedule),
                schedule.updated_at,
            )
        return Schedule.from_row(row) if row is not None else None

    async def delete_schedule(self, org_id: uuid.UUID, schedule_id: uuid.UUID) -> bool:
        async with self._connection() as conn:
            return await conn.fetchval(QUERIES["delete_schedule"], org_id, schedule_id) is not None

    async def due_schedules(
        self, now: datetime, limit: int, skip: Collection[uuid.UUID] = ()
    ) -> list[Schedule]:
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["due_schedules"], now, limit, list(skip))
        return [Schedule.from_row(row) for row in rows]

    async def run_schedule(
        self, schedule: Schedule, runs: list[tuple[datetime, ExportRequest]], next_run_at: datetime
    ) -> list[Job] | None:
        """Make ``runs`` of ``schedule`` (its jobs, pending, one per period) and move its next run
        to ``next_run_at``, in one transaction; ``None`` when another runner moved it first or it
        changed since it was read (the next tick makes them with its new settings). A
        period the schedule already has a job for gets none (the unique index), so no race, retry
        or restore ever makes two."""
        async with self._connection() as conn, conn.transaction():
            last_run = runs[-1][0] if runs else schedule.last_run_at
            moved = await conn.fetchval(
                QUERIES["advance_schedule"],
                schedule.schedule_id,
                schedule.next_run_at,
                next_run_at,
                last_run,
                schedule.updated_at,
            )
            if moved is None:
                return None
            created: list[Job] = []
            for _, request in runs:
                row = await conn.fetchrow(
                    QUERIES["create_scheduled_job"], *_new_job(request, None), schedule.schedule_id
                )
                if row is not None:
                    created.append(Job.from_row(row))
            if created:
                await conn.execute(QUERIES["record_schedule_job"], schedule.schedule_id, created[-1].job_id)
        return created

    # --- rollup tables -------------------------------------------------------------------------

    async def rollup_problems(self) -> list[str]:
        """What an export would miss in the rollup tables (none: they serve)."""
        async with self._connection() as conn:
            return await rollup_table_problems(conn, self._tables)

    # --- restatements --------------------------------------------------------------------------

    async def claim_totals_checks(
        self, delivered_since: datetime, checked_before: datetime, limit: int
    ) -> list[tuple[Job, bytes | None]]:
        """Delivered scheduled jobs due for a comparison of their totals, marked checked, each
        with its manifest."""
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["claim_totals_checks"], delivered_since, checked_before, limit)
        return [
            (Job.from_row(row), row["manifest_text"].encode() if row["manifest_text"] is not None else None)
            for row in rows
        ]

    async def period_totals(self, job: Job) -> dict[str, tuple[Decimal, int, int, int]]:
        """The totals per currency (cost, requests, tokens, errors) the rollups hold now for what
        ``job`` exported, read as its export query reads them."""
        hourly = job.granularity is Granularity.HOURLY or (
            job.output_schema is DatasetSchema.NATIVE and job.time_zone != "UTC"
        )
        coverage = job.coverage
        models = list(job.models) if job.models else None
        first, last = coverage.start, coverage.end
        async with self._connection() as conn, conn.transaction(readonly=True):
            await conn.execute(QUERIES["custom_plans"])
            if hourly:
                rows = await conn.fetch(self._sql["period_totals_hours"], job.org_id, first, last, models)
            else:
                rows = await conn.fetch(
                    self._sql["period_totals_days"], job.org_id, first, last, models, *whole_days(first, last)
                )
        return {
            row["currency"]: (
                row["cost_total"],
                row["request_count"],
                row["tokens_total"],
                row["error_count"],
            )
            for row in rows
        }

    async def create_restatement(self, job: Job) -> Job | None:
        """A pending job of ``job``'s schedule and period restating it (None: it has one)."""
        async with self._connection() as conn:
            row = await conn.fetchrow(
                QUERIES["create_restatement"], *_new_job(job.request, None), job.schedule_id, job.job_id
            )
        return Job.from_row(row) if row is not None else None

    # --- webhooks ----------------------------------------------------------------------------

    async def create_webhook(
        self,
        webhook_id: uuid.UUID,
        org_id: uuid.UUID,
        created_by: str,
        url: str,
        events: tuple[WebhookEvent, ...],
        secret: str,
        max_per_org: int,
    ) -> Webhook:
        """Insert an endpoint; Conflict when its org already has ``max_per_org``."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(QUERIES["lock_org_creates"], org_id)
            count = await conn.fetchval(QUERIES["count_webhooks"], org_id)
            if count >= max_per_org:
                raise Conflict(
                    f"this org already has {count} webhooks (at most {max_per_org}); delete one first"
                )
            row = await conn.fetchrow(
                QUERIES["create_webhook"],
                webhook_id,
                org_id,
                created_by,
                url,
                [e.value for e in events],
                secret,
            )
        assert row is not None
        return Webhook.from_row(row)

    async def get_webhook(self, org_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(QUERIES["get_webhook"], org_id, webhook_id)
        return Webhook.from_row(row) if row is not None else None

    async def list_webhooks(self, org_id: uuid.UUID, limit: int) -> list[Webhook]:
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["list_webhooks"], org_id, limit)
        return [Webhook.from_row(row) for row in rows]

    async def update_webhook(
        self, org_id: uuid.UUID, webhook_id: uuid.UUID, change: WebhookChange
    ) -> Webhook | None:
        """Apply ``change``; an endpoint disabled by it has its waiting deliveries failed."""
        events = [e.value for e in change.events] if change.events is not None else None
        async with self._connection() as conn, conn.transaction():
            row = await conn.fetchrow(
                QUERIES["update_webhook"], org_id, webhook_id, change.url, events, change.enabled
            )
            if row is not None and not row["enabled"]:
                await conn.execute(QUERIES["fail_pending_deliveries"], webhook_id)
        return Webhook.from_row(row) if row is not None else None

    async def delete_webhook(self, org_id: uuid.UUID, webhook_id: uuid.UUID) -> bool:
        async with self._connection() as conn:
            return await conn.fetchval(QUERIES["delete_webhook"], org_id, webhook_id) is not None

    async def rotate_webhook_secret(
        self, org_id: uuid.UUID, webhook_id: uuid.UUID, secret: str, grace_seconds: float
    ) -> Webhook | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                QUERIES["rotate_webhook_secret"], org_id, webhook_id, secret, grace_seconds
            )
        return Webhook.from_row(row) if row is not None else None

    async def deliveries(
        self, org_id: uuid.UUID, webhook_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> DeliveryPage:
        """A page of an endpoint's deliveries, newest first, with their attempts."""
        before = decode_event_cursor(cursor) if cursor else None  # a delivery's seq, as events' ids
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["list_deliveries"], webhook_id, org_id, before, limit + 1)
        items = tuple(
            Delivery(
                delivery_id=row["delivery_id"],
                seq=row["seq"],
                webhook_id=row["webhook_id"],
                org_id=row["org_id"],
                event=WebhookEvent(row["event"]),
                job_id=row["job_id"],
                status=DeliveryStatus(row["status"]),
                attempts=tuple(Attempt.from_json(a) for a in orjson.loads(row["attempts"])),
                next_attempt_at=row["next_attempt_at"],
                created_at=row["created_at"],
                finished_at=row["finished_at"],
            )
            for row in rows[:limit]
        )
        more = len(rows) > limit
        return DeliveryPage(items, encode_event_cursor(items[-1].seq) if more else None)

    async def claim_due_deliveries(self, limit: int, hold_seconds: float) -> list[tuple[uuid.UUID, int]]:
        """Due deliveries, each held for ``hold_seconds``, with the attempts made so far."""
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["claim_due_deliveries"], limit, hold_seconds)
        return [(row["delivery_id"], row["attempts"]) for row in rows]

    async def begin_attempt(
        self, delivery_id: uuid.UUID, attempts: int, hold_seconds: float
    ) -> tuple[Pending, str, tuple[str, ...]] | None:
        """Start the attempt after ``attempts`` (None when another one started, the delivery
        finished or its endpoint is disabled or gone): the delivery, its URL and live secrets."""
        async with self._connection() as conn:
            row = await conn.fetchrow(QUERIES["begin_attempt"], delivery_id, attempts, hold_seconds)
        if row is None:
            return None
        pending = Pending(
            delivery_id=row["delivery_id"],
            webhook_id=row["webhook_id"],
            org_id=row["org_id"],
            event=WebhookEvent(row["event"]),
            job_id=row["job_id"],
            attempts=row["attempts"] - 1,
            payload=row["payload"],
            details=orjson.loads(row["details"]),
            created_at=row["created_at"],
        )
        live = (row["secret"],) + ((row["previous_secret"],) if row["previous_secret"] else ())
        return pending, row["url"], live

    async def set_delivery_payload(self, delivery_id: uuid.UUID, payload: bytes) -> bytes:
        """Store the body unless one is stored already; the stored one."""
        async with self._connection() as conn:
            stored = await conn.fetchval(QUERIES["set_delivery_payload"], delivery_id, payload)
        return bytes(stored) if stored is not None else payload

    async def finish_attempt(
        self,
        delivery_id: uuid.UUID,
        attempt: Attempt,
        *,
        next_attempt_at: datetime | None,
        disable_failing_before: datetime,
        disabled_reason: str,
    ) -> bool:
        """Record ``attempt`` and what follows: delivered (no error), another attempt at
        ``next_attempt_at``, or failed; an endpoint failing since ``disable_failing_before`` or
        earlier is disabled, its waiting deliveries failed. True when that disabled it."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                QUERIES["record_attempt"],
                delivery_id,
                attempt.attempt,
                attempt.attempted_at,
                attempt.status_code,
                attempt.error,
                attempt.duration_ms,
            )
            if attempt.error is None:
                await conn.execute(QUERIES["mark_delivered"], delivery_id)
                return False
            await conn.fetchval(
                QUERIES["mark_attempt_failed"],
                delivery_id,
                attempt.attempt,
                next_attempt_at,
                attempt.attempted_at,
            )
            webhook_id = await conn.fetchval(
                QUERIES["disable_failing_webhook"],
                await conn.fetchval(QUERIES["delivery_webhook"], delivery_id),
                disable_failing_before,
                disabled_reason,
            )
            if webhook_id is not None:
                await conn.execute(QUERIES["fail_pending_deliveries"], webhook_id)
            return webhook_id is not None

    async def forget_webhook_deliveries(self, cutoff: datetime, limit: int) -> int:
        async with self._connection() as conn:
            status = await conn.execute(QUERIES["forget_webhook_deliveries"], cutoff, limit)
        return int(status.split()[-1])

    async def copy_rows(self, job: Job, sink: Sink, focus_names: tuple[str, str] = ("", "")) -> int:
        """Stream the job's CSV (header included) into ``sink`` and return the number of data rows.

        PostgreSQL encodes the CSV itself (``COPY ... TO STDOUT``), read in one read-only
        repeatable-read snapshot so the file is consistent; ``sink`` is awaited for every chunk,
        which gives backpressure all the way to the server. ``focus_names`` (provider, service)
        name the platform in a FOCUS dataset.
        """
        coverage = job.coverage
        models = list(job.models) if job.models else None
        # Text cells made spreadsheet-safe in files a spreadsheet opens; Parquet is typed.
        guarded = job.output_format is not ExportFormat.PARQUET
        # Every export query of rollups.sql reads its period as these: the org, the coverage, the
        # models and the whole UTC days inside the coverage (the hourly export, the first four).
        period = (job.org_id, coverage.start, coverage.end, models)
        whole = whole_days(coverage.start, coverage.end)
        args: tuple[object, ...]
        if job.output_schema is DatasetSchema.FOCUS_1_0:
            query = self._sql["export_focus"]
            args = (*period, *whole, guarded, job.granularity.value, *focus_names)
        elif job.granularity is Granularity.HOURLY:
            query = self._sql["export_hourly"]
            args = (*period, job.time_zone, guarded)
        else:
            query = self._sql[f"export_{job.granularity.value}"]
            args = (*period, *whole, job.time_zone, guarded)
        pool = await self._read_pool_for(job)
        try:
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                status = await conn.copy_from_query(query, *args, output=sink, format="csv", header=True)
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
        # The status string is "COPY <rows>": counted by the server, not by parsing our own bytes.
        return int(status.split()[-1])

    async def _read_pool_for(self, job: Job) -> asyncpg.Pool:
        """The replica once it has replayed past the job's creation; else the primary."""
        if self._read_pool is None:
            return self._pool
        deadline = time.monotonic() + self._replica_wait
        while True:
            try:
                async with self._read_pool.acquire() as conn:
                    if await conn.fetchval(QUERIES["job_exists"], job.job_id):
                        return self._read_pool
            except CONNECTION_ERRORS as exc:
                log.warning("the read replica is unreachable", extra={"reason": str(exc)})
                break
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(REPLICA_POLL_SECONDS)
        log.warning(
            "the read replica is behind the job's creation; exporting from the primary",
            extra={"job_id": str(job.job_id)},
        )
        if self._on_replica_behind is not None:
            self._on_replica_behind()
        return self._pool


async def seed_demo(
    database_url: str,
    tables: RollupTables,
    org_id: uuid.UUID,
    models: int,
    start: datetime,
    end: datetime,
    currency: str,
) -> int:
    """Insert deterministic demo rollups in ``currency`` (hourly, and daily as their exact sums)
    into ``tables`` (made by ``migrate up --with-rollups``); return hourly rows."""
    sql = rollup_queries(tables.placeholders())
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            status = await conn.execute(sql["seed_demo_hourly"], org_id, models, start, end, currency)
            await conn.execute(sql["seed_demo_daily"], org_id)
        return int(status.split()[-1])
    finally:
        await conn.close()


async def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL if it does not exist (dev and tests); True if created."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        if await admin.fetchval(QUERIES["database_exists"], name):
            return False
        # CREATE DATABASE takes no parameters; quote the identifier the server's way.
        quoted = await admin.fetchval(QUERIES["quote_ident"], name)
        try:
            await admin.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.exceptions.DuplicateDatabaseError:
            return False
        return True
    finally:
        await admin.close()
