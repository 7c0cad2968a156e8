"""Prometheus metrics: what the API and the workers count and time.

Each process builds its own set in a registry of its own (never the global default registry), so
tests can build as many as they like and a process exposes exactly its own metrics. The API
serves them at ``/metrics`` on its HTTP port, a worker on ``METRICS_PORT``. The names here are
the contract with ``ops/prometheus/alerts.yml`` and ``ops/grafana/exports-dashboard.json``
(a test checks that every metric those use is exported).

Counters appear with a ``_total`` suffix and histograms as ``_bucket``/``_sum``/``_count``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.job import JobBacklog

#: The classic text format every Prometheus version reads (our names are plain ASCII, so the
#: client library's output is the same as under its newer default content type).
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: Request latency: the API answers in milliseconds; the tail is what matters.
HTTP_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Whole export attempts: seconds for small exports, up to the 20-minute time limit.
EXPORT_BUCKETS: Final = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)
#: One part upload (8 MiB by default), retries included.
PART_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


#: How an export attempt can end (the ``outcome`` label).
OUTCOMES: Final = ("succeeded", "failed", "retrying", "cancelled", "handed_back", "lost")
#: The final statuses a worker brings jobs to (the ``status`` label of exports_jobs_finished_total).
FINAL_STATUSES: Final = ("succeeded", "failed", "cancelled")
#: The periodic ticks a worker runs (the ``tick`` label).
TICKS: Final = ("expire", "sweep", "prune", "schedules", "webhooks", "restatements")
#: How a webhook delivery attempt can end (the ``outcome`` label).
WEBHOOK_OUTCOMES: Final = ("delivered", "retry", "failed")
#: Why an export message went back to the queue without an attempt (the ``reason`` label).
DEFERRALS: Final = ("database_unavailable", "shutting_down")
#: What the periodic ticks count (the ``action`` label).
HOUSEKEEPING_ACTIONS: Final = (
    "expired",
    "requeued",
    "failed",
    "cancelled",
    "published",
    "cleaned",
    "aborted",
    "pruned_rows",
    "restated",
)


class ApiMetrics:
    """The API process: requests, and the backlog as read from the database and the broker at
    each scrape (every API replica reports the same backlog: aggregate it with ``max``)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "exports_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "exports_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.jobs = Gauge(
            "exports_jobs",
            "Export jobs that are pending or running now (all orgs).",
            ["status"],
            registry=registry,
        )
        self.oldest_pending = Gauge(
            "exports_oldest_pending_job_age_seconds",
            "How long the oldest pending job has been due to run (0 when none is waiting).",
            registry=registry,
        )
        self.overdue_schedules = Gauge(
            "exports_schedules_overdue",
            "Enabled export schedules whose next run is over 5 minutes late: no tick made it.",
            registry=registry,
        )
        self.overdue_webhook_deliveries = Gauge(
            "exports_webhook_deliveries_overdue",
            "Webhook deliveries due for over 5 minutes without an attempt: no tick dispatched them, "
            "or their messages wait behind exports for a worker slot.",
            registry=registry,
        )
        self.queue_messages = Gauge(
            "exports_queue_messages",
            "Messages in RabbitMQ: the export queue, its delay queue (.DQ) and dead-letter queue (.XQ).",
            ["queue"],
            registry=registry,
        )
        self.backlog_errors = Counter(
            "exports_backlog_read_errors",
            "Scrapes that could not read the backlog, by source (database or broker).",
            ["source"],
            registry=registry,
        )

        for source in ("database", "broker"):
            self.backlog_errors.labels(source)  # present at 0 from the start: increase() sees the first
        self.open_connections = Gauge(
            "exports_http_open_connections",
            "Client connections the API holds open now (HTTP_MAX_CONNECTIONS at most).",
            registry=registry,
        )
        self.connections_closed = Counter(
            "exports_http_connections_closed",
            "Connections the API closed before a request was read: header_timeout (a request line "
            "and headers slower than HTTP_HEADER_TIMEOUT) or over_capacity (HTTP_MAX_CONNECTIONS).",
            ["reason"],
            registry=registry,
        )
        for reason in ("header_timeout", "over_capacity"):
            self.connections_closed.labels(reason)
        self.dependency_up = Gauge(
            "exports_dependency_up",
            "Whether a dependency answered the last readiness check or scrape: database, broker, "
            "bucket:<name> (1 yes, 0 no). Only the database makes the API unready.",
            ["dependency"],
            registry=registry,
        )
        self.malformed_requests = Counter(
            "exports_http_malformed_requests",
            "Requests refused by the HTTP parser before any handler ran (malformed HTTP).",
            registry=registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        # The labelled children, looked up once per (route, method, status): labels() costs more
        # than the observation itself on the API's hottest path.
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_backlog(self, backlog: Backlog) -> None:
        if backlog.jobs is None:
            self.backlog_errors.labels("database").inc()
        else:
            self.jobs.labels("pending").set(backlog.jobs.pending)
            self.jobs.labels("running").set(backlog.jobs.running)
            self.oldest_pending.set(backlog.jobs.oldest_pending_seconds)
            self.overdue_schedules.set(backlog.jobs.overdue_schedules)
            self.overdue_webhook_deliveries.set(backlog.jobs.overdue_webhook_deliveries)
        if backlog.queues is None:
            self.backlog_errors.labels("broker").inc()
        else:
            for queue, messages in backlog.queues.items():
                self.queue_messages.labels(queue).set(messages)

    def observe_dependencies(self, report: Mapping[str, str | None]) -> None:
        for dependency, problem in report.items():
            self.dependency_up.labels(dependency).set(0 if problem else 1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a scrape read; ``None`` where the source could not be read (the gauges keep their
    last value and ``exports_backlog_read_errors_total`` counts the miss)."""

    jobs: JobBacklog | None
    queues: dict[str, int] | None


class ExportMetrics:
    """A worker process: export attempts and their outcomes, volumes, part uploads, retries, and
    what the periodic ticks did."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.attempts = Counter(
            "exports_attempts",
            "Export attempts by how they ended: succeeded, failed, retrying, cancelled, "
            "handed_back (worker shutdown) or lost (the job moved on).",
            ["outcome"],
            registry=registry,
        )
        self.finished = Counter(
            "exports_jobs_finished",
            "Jobs this worker brought to a final status: succeeded, failed or cancelled.",
            ["status"],
            registry=registry,
        )
        self.duration = Histogram(
            "exports_export_duration_seconds",
            "Wall time of an export attempt, from claim to its last write, by outcome.",
            ["outcome"],
            buckets=EXPORT_BUCKETS,
            registry=registry,
        )
        self.rows = Counter("exports_rows", "CSV rows in succeeded exports.", registry=registry)
        self.bytes = Counter("exports_bytes", "CSV bytes uploaded by succeeded exports.", registry=registry)
        self.part_upload = Histogram(
            "exports_part_upload_duration_seconds",
            "Time to upload one multipart part to S3, retries included.",
            buckets=PART_BUCKETS,
            registry=registry,
        )
        self.storage_retries = Counter(
            "exports_storage_retries",
            "S3 calls tried again after a retryable failure (throttling, 5xx, timeouts, resets).",
            registry=registry,
        )
        self.running = Gauge(
            "exports_running_exports", "Exports this worker is streaming now.", registry=registry
        )
        self.housekeeping = Counter(
            "exports_housekeeping_actions",
            "What the periodic ticks did: expired, requeued, failed, cancelled, published, "
            "cleaned, aborted (uploads), pruned_rows, restated (exports made again: their "
            "period's totals changed after delivery).",
            ["action"],
            registry=registry,
        )
        self.ticks = Counter(
            "exports_housekeeping_ticks",
            "Periodic ticks this worker ran, by tick: expire, sweep, prune, schedules, webhooks, "
            "restatements. They come from the "
            "scheduler: none at all means the scheduler is not running.",
            ["tick"],
            registry=registry,
        )
        self.ticks_skipped = Counter(
            "exports_housekeeping_ticks_skipped",
            "Periodic ticks skipped because PostgreSQL was unavailable, by tick; the next tick "
            "does their work.",
            ["tick"],
            registry=registry,
        )
        self.replica_behind = Counter(
            "exports_replica_behind",
            "Exports read from the primary because the read replica (DATABASE_READ_URL) had not "
            "replayed past the job's creation in time, or could not be reached.",
            registry=registry,
        )
        self.deferred = Counter(
            "exports_messages_deferred",
            "Export messages sent back through the delay queue without an attempt, by reason: "
            "database_unavailable (the job could not be claimed; tried again an interval later) "
            "or shutting_down (this worker was draining; another worker takes it).",
            ["reason"],
            registry=registry,
        )
        self.webhook_attempts = Counter(
            "exports_webhook_attempts",
            "Webhook delivery attempts this worker made, by outcome: delivered (2xx), retry (another "
            "attempt is due later), failed (the delivery's last attempt failed).",
            ["outcome"],
            registry=registry,
        )
        self.webhooks_disabled = Counter(
            "exports_webhooks_disabled",
            "Webhook endpoints disabled after failing every attempt for WEBHOOK_DISABLE_AFTER.",
            registry=registry,
        )
        # Every known label value is exported at 0 from the start, so a rate or increase() over
        # a restart counts the first event after it.
        for outcome in OUTCOMES:
            self.attempts.labels(outcome)
            self.duration.labels(outcome)
        for status in FINAL_STATUSES:
            self.finished.labels(status)
        for action in HOUSEKEEPING_ACTIONS:
            self.housekeeping.labels(action)
        for tick in TICKS:
            self.ticks.labels(tick)
            self.ticks_skipped.labels(tick)
        for reason in DEFERRALS:
            self.deferred.labels(reason)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_attempts.labels(outcome)
