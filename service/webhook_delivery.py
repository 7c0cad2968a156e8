"""The worker's side of webhooks: the tick that hands due deliveries to workers, and one attempt of
one delivery (sign, POST, record what the receiver said, decide what follows).

At least once: an attempt is recorded after the receiver answered, so a worker that dies in
between leaves the delivery due again and it is sent again, with the same ``webhook-id`` (the
receiver's key for ignoring a repeat). A redirect is an answer, not a delivery: it is never
followed. An endpoint whose every attempt failed for WEBHOOK_DISABLE_AFTER is disabled.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import orjson

from service import webhook_signing
from service.errors import QueueUnavailable
from service.job import Job, job_json, job_path, rfc3339
from service.metrics import ExportMetrics
from service.repository import JobRepository
from service.restatement import differences
from service.settings import Settings
from service.webhook import (
    Attempt,
    Pending,
    Unreachable,
    WebhookEvent,
    ip_literal,
    message_id,
    refused_ip,
    retry_delay,
)

log = logging.getLogger(__name__)
#: Deliveries a tick hands out at a time, and how long one stays held for its message.
DISPATCH_BATCH: Final = 500
DISPATCH_HOLD_SECONDS: Final = 120.0
#: Finished deliveries (and their attempts) are kept this long for the deliveries list.
KEEP_FINISHED: Final = timedelta(days=30)

Send = Callable[[uuid.UUID, int], Awaitable[None]]


class Transport(Protocol):
    """How an attempt reaches a receiver (actors/webhook_client.py: aiohttp)."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str | None]:
        """POST ``body``; the status code and the Location header. No redirect is followed.
        Unreachable when no answer came (timeout, refused, DNS, TLS)."""
        ...


class WebhookSender:
    def __init__(
        self,
        repository: JobRepository,
        transport: Transport,
        settings: Settings,
        metrics: ExportMetrics,
    ) -> None:
        self._repository = repository
        self._transport = transport
        self._settings = settings
        self._metrics = metrics

    async def dispatch_due(self, send: Send) -> int:
        """Hand every due delivery to a worker (a message naming it and its attempt), and forget
        deliveries finished over KEEP_FINISHED ago. A delivery whose message could not be sent is
        handed out again when its hold lapses."""
        self._metrics.ticks.labels("webhooks").inc()
        sent = 0
        while True:
            due = await self._repository.claim_due_deliveries(DISPATCH_BATCH, DISPATCH_HOLD_SECONDS)
            for delivery_id, attempts in due:
                try:
                    await send(delivery_id, attempts)
                except QueueUnavailable as exc:
                    log.warning(
                        "webhook deliveries not dispatched: the broker is unavailable; the next tick"
                        " after their hold tries again",
                        extra={"reason": str(exc)},
                    )
                    return sent
                sent += 1
            if len(due) < DISPATCH_BATCH:
                break
        await self._repository.forget_webhook_deliveries(datetime.now(UTC) - KEEP_FINISHED, 10_000)
        return sent

    async def deliver(self, delivery_id: uuid.UUID, attempts: int) -> None:
        """Make the attempt after ``attempts`` of the delivery, unless another attempt started
        since, the delivery finished, or its endpoint is disabled or gone."""
        hold = self._settings.webhook_timeout + DISPATCH_HOLD_SECONDS
        begun = await self._repository.begin_attempt(delivery_id, attempts, hold)
        if begun is None:
            return
        pending, url, live_secrets = begun
        body = pending.payload
        if body is None:
            body = await self._repository.set_delivery_payload(delivery_id, await self._payload(pending))
        attempt = await self._post(pending, url, live_secrets, body)
        delay = (
            None
            if attempt.error is None
            else retry_delay(attempt.attempt, self._settings.webhook_retry_schedule)
        )
        outcome = "delivered" if attempt.error is None else ("retry" if delay is not None else "failed")
        disable_after = self._settings.webhook_disable_after
        disabled = await self._repository.finish_attempt(
            delivery_id,
            attempt,
            next_attempt_at=attempt.attempted_at + delay if delay is not None else None,
            disable_failing_before=attempt.attempted_at - timedelta(seconds=disable_after),
            disabled_reason=f"every delivery attempt failed for {_duration(disable_after)}"
            f" (the last: {attempt.error})",
        )
        self._metrics.webhook_attempts.labels(outcome).inc()
        ctx = {
            "delivery_id": str(delivery_id),
            "webhook_id": str(pending.webhook_id),
            "org_id": str(pending.org_id),
            "job_id": str(pending.job_id),
            "event": pending.event.value,
            "attempt": attempt.attempt,
            "status_code": attempt.status_code,
        }
        if outcome == "delivered":
            log.info("webhook delivered", extra=ctx)
        else:
            log.warning("webhook attempt failed", extra={**ctx, "reason": attempt.error, "outcome": outcome})
        if disabled:
            self._metrics.webhooks_disabled.inc()
            log.warning("webhook disabled: every attempt failed", extra=ctx)

    async def _payload(self, pending: Pending) -> bytes:
        """The body: the event, when it happened, the job as the API returns it, the manifest's
        totals (succeeded jobs) and the API URL of the download (never a presigned link; none for
        a failed or cancelled job)."""
        job, totals = await self._job_and_totals(pending.org_id, pending.job_id)
        download = self._settings.public_api_url + job_path(pending.org_id, pending.job_id) + "/download"
        delivered = pending.event in (WebhookEvent.SUCCEEDED, WebhookEvent.RESTATED)
        data: dict[str, object] = {
            "job": job_json(job) if job is not None else None,
            "totals": totals,
            "downloadUrl": download if delivered else None,
        }
        if pending.event is WebhookEvent.RESTATED:
            # What the org was told before, and by how much each total moved.
            restated = uuid.UUID(str(pending.details["restatementOf"]))
            previous = (await self._job_and_totals(pending.org_id, restated))[1] or {}
            data |= {
                "restatementOf": str(restated),
                "previousTotals": previous,
                "differences": differences(totals or {}, previous),
            }
        return orjson.dumps(
            {"type": pending.event.value, "timestamp": rfc3339(pending.created_at), "data": data}
        )

    async def _job_and_totals(
        self, org_id: uuid.UUID, job_id: uuid.UUID
    ) -> tuple[Job | None, dict[str, Any] | None]:
        found = await self._repository.get_manifest(org_id, job_id)
        if found is None:
            return None, None
        job, manifest = found
        return job, orjson.loads(manifest)["totals"] if manifest is not None else None

    async def _post(self, pending: Pending, url: str, live_secrets: tuple[str, ...], body: bytes) -> Attempt:
        number = pending.attempts + 1
        now = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            **webhook_signing.headers(
                live_secrets, message_id(pending.delivery_id), int(now.timestamp()), body
            ),
        }
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            literal = ip_literal(urlsplit(url).hostname or "")
            reason = refused_ip(literal) if literal is not None else None
            if reason is not None and not self._settings.webhook_allow_private_urls:
                raise Unreachable(f"the URL points to {reason}")
            status, location = await self._transport.post(url, body, headers)
            if not 200 <= status < 300:
                where = f" to {location}" if 300 <= status < 400 and location else ""
                error = f"answered {status}{where} (only 2xx is a delivery; redirects are not followed)"
        except Unreachable as exc:
            error = str(exc)
        duration_ms = round((time.monotonic() - started) * 1000)
        return Attempt(number, now, status, error[:500] if error else None, duration_ms)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"
