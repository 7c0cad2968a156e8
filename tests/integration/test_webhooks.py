"""Webhooks against a real PostgreSQL and a real receiver on loopback (aiohttp's client and
server): deliveries made with the job's change, attempts, retries, failure, disabling."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from actors.webhook_client import PublicResolver, WebhookClient
from service import webhook_signing
from service.errors import ValidationFailed
from service.job import Caller, ExportOutput, ExportRequest, Granularity, job_json
from service.metrics import ExportMetrics
from service.repository import JobRepository, create_pool
from service.rollups import DEFAULT_TABLES
from service.settings import Settings
from service.webhook import DeliveryStatus, WebhookChange, WebhookEvent
from service.webhook_delivery import WebhookSender
from service.webhook_endpoints import WebhookService
from tests.support.webhook_receiver import Receiver, running_receiver

pytestmark = pytest.mark.usefixtures("clean_state")
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 11, 2, tzinfo=UTC)
MANIFEST = orjson.dumps(
    {"manifestVersion": 1, "totals": {"USD": {"costTotal": "1.250000", "requestCount": 3}}}
)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as found:
        yield found


@pytest.fixture
async def repository(settings: Settings) -> AsyncIterator[JobRepository]:
    pool = await create_pool(settings.database_url, max_size=5)
    yield JobRepository(pool, tables=DEFAULT_TABLES)
    await pool.close()


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    return replace(
        settings,
        webhook_timeout=2.0,
        webhook_retry_schedule=(3.0, 60.0),
        api_public_url="https://exports.example.com",
    )


@pytest.fixture
async def sender(repository: JobRepository, webhook_settings: Settings) -> AsyncIterator[WebhookSender]:
    client = WebhookClient(webhook_settings)
    yield WebhookSender(repository, client, webhook_settings, ExportMetrics())
    await client.close()


async def finish_job(repository: JobRepository, org: uuid.UUID, *, succeed: bool = True) -> uuid.UUID:
    job = (
        await repository.create(
            ExportRequest(org, "finance@example.com", START, END, Granularity.DAILY, None)
        )
    ).job
    claimed = await repository.claim(job.job_id, 60, "w:1")
    assert claimed is not None
    if succeed:
        output = ExportOutput(
            "s3://b/k.csv", "a" * 64, 3, 100, MANIFEST, hashlib.sha256(MANIFEST).hexdigest()
        )
        assert await repository.complete(claimed, output, 3600) is not None
    else:
        assert await repository.fail(claimed, "boom") is not None
    return job.job_id


class Dispatched(list[tuple[uuid.UUID, int]]):
    """What a dispatch sends (delivery id, attempts made so far), in order: its ``send``."""

    async def __call__(self, delivery_id: uuid.UUID, attempts: int) -> None:
        self.append((delivery_id, attempts))


async def deliveries(settings: Settings) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await conn.fetch("SELECT * FROM analytics.webhook_deliveries ORDER BY seq")
    finally:
        await conn.close()


async def sql(settings: Settings, statement: str, *args: object) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


async def test_a_finished_job_makes_one_delivery_per_subscribed_enabled_endpoint_of_its_org(
    repository: JobRepository, settings: Settings, receiver: Receiver
) -> None:
    # Given an org with endpoints for each event, a disabled one, and another org's endpoint
    service = WebhookService(repository, allow_private_urls=True)
    org, other = uuid.uuid4(), uuid.uuid4()
    succeeded_only, _ = await service.create(org, "a", receiver.url, (WebhookEvent.SUCCEEDED,))
    failed_only, _ = await service.create(org, "a", receiver.url, (WebhookEvent.FAILED,))
    both, _ = await service.create(org, "a", receiver.url, (WebhookEvent.SUCCEEDED, WebhookEvent.FAILED))
    disabled, _ = await service.create(org, "a", receiver.url, (WebhookEvent.SUCCEEDED,))
    await service.update(org, disabled.webhook_id, WebhookChange(enabled=False))
    await service.create(other, "a", receiver.url, (WebhookEvent.SUCCEEDED,))
    # When one job succeeds and one fails (and a job is only created: no event)
    ok = await finish_job(repository, org)
    bad = await finish_job(repository, org, succeed=False)
    await repository.create(ExportRequest(org, "x", START, END, Granularity.DAILY, None))
    # Then each subscribed, enabled endpoint of the org has exactly its events, pending and due
    made = {(row["webhook_id"], row["job_id"], row["event"]) for row in await deliveries(settings)}
    assert made == {
        (succeeded_only.webhook_id, ok, "export.succeeded"),
        (both.webhook_id, ok, "export.succeeded"),
        (failed_only.webhook_id, bad, "export.failed"),
        (both.webhook_id, bad, "export.failed"),
    }
    assert {row["status"] for row in await deliveries(settings)} == {"pending"}


async def test_a_cancelled_export_is_announced_without_a_file(
    repository: JobRepository, sender: WebhookSender, settings: Settings, receiver: Receiver
) -> None:
    # Given an endpoint for cancellations and one for successes only
    service = WebhookService(repository, allow_private_urls=True)
    org = uuid.uuid4()
    webhook, _ = await service.create(org, "a", receiver.url, (WebhookEvent.CANCELLED,))
    await service.create(org, "a", receiver.url, (WebhookEvent.SUCCEEDED,))
    # When a pending export is cancelled
    job = (await repository.create(ExportRequest(org, "x", START, END, Granularity.DAILY, None))).job
    cancelled = await repository.cancel(org, job.job_id, Caller("finance@example.com", None, None))
    assert cancelled is not None
    # Then only the first endpoint gets export.cancelled: the job, and no totals or link
    [row] = await deliveries(settings)
    assert (row["webhook_id"], row["job_id"], row["event"]) == (
        webhook.webhook_id,
        job.job_id,
        "export.cancelled",
    )
    sent = Dispatched()

    assert await sender.dispatch_due(sent) == 1
    await sender.deliver(*sent[0])
    body = orjson.loads(receiver.received[0][1])
    assert body["type"] == "export.cancelled"
    assert body["data"]["job"]["status"] == "cancelled"
    assert body["data"]["totals"] is None
    assert body["data"]["downloadUrl"] is None


async def test_an_attempt_that_fails_is_retried_with_the_same_id_and_body_until_delivered(
    repository: JobRepository, sender: WebhookSender, settings: Settings, receiver: Receiver
) -> None:
    # Given an endpoint whose receiver first answers 500, then times out, then takes it
    service = WebhookService(repository, allow_private_urls=True)
    org = uuid.uuid4()
    webhook, secret = await service.create(org, "a", receiver.url, (WebhookEvent.SUCCEEDED,))
    job_id = await finish_job(repository, org)
    receiver.answers = (500, "slow")
    sent = Dispatched()

    # When the tick dispatches it and the worker tries: 500
    assert await sender.dispatch_due(sent) == 1
    [(delivery_id, attempts)] = sent
    assert attempts == 0
    await sender.deliver(delivery_id, attempts)
    [row] = await deliveries(settings)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    # A duplicate message for the same attempt does nothing (compare-and-set on the attempts)
    await sender.deliver(delivery_id, 0)
    assert len(receiver.received) == 1
    # Not due before its retry delay (3 s), then due: the second attempt times out
    sent.clear()
    assert await sender.dispatch_due(sent) == 0
    await asyncio.sleep(3.1)
    assert await sender.dispatch_due(sent) == 1
    await sender.deliver(*sent[-1])
    # The third is due a minute later (the schedule's second delay): make it due now
    await sql(settings, "UPDATE analytics.webhook_deliveries SET next_attempt_at = now()")
    assert await sender.dispatch_due(sent) == 1
    await sender.deliver(*sent[-1])

    # Then it is delivered, after three attempts that carried the same id and body
    page = await service.deliveries(org, webhook.webhook_id, limit=10, cursor=None)
    [delivery] = page.items
    assert delivery.status is DeliveryStatus.DELIVERED
    assert [(a.attempt, a.status_code) for a in delivery.attempts] == [(1, 500), (2, None), (3, 200)]
    assert "no answer within 2 s" in (delivery.attempts[1].error or "")
    assert delivery.attempts[2].error is None
    assert len(receiver.received) == 3
    assert {headers["webhook-id"] for headers, *_ in receiver.received} == {delivery.message_id}
    assert len({body for _, body, _ in receiver.received}) == 1
    for headers, body, _ in receiver.received:
        webhook_signing.verify(secret, headers, body, now=time.time())
    # The body: the event, the job as the API returns it, the manifest's totals, the API's URL
    body = orjson.loads(receiver.received[0][1])
    job = await repository.get(org, job_id)
    assert job is not None
    assert body["type"] == "export.succeeded"
    assert body["data"]["job"] == job_json(job)
    assert body["data"]["totals"] == {"USD": {"costTotal": "1.250000", "requestCount": 3}}
    assert body["data"]["downloadUrl"] == (
        f"https://exports.example.com/analytics/v1/orgs/{org}/exports/{job_id}/download"
    )
    # And nothing is due any more; the endpoint is not failing
    assert await sender.dispatch_due(sent) == 0
    assert (await service.get(org, webhook.webhook_id)).failing_since is None


async def test_a_redirect_is_not_followed_and_the_last_retry_fails_the_delivery(
    repository: JobRepository, sender: WebhookSender, settings: Settings, receiver: Receiver
) -> None:
    service = WebhookService(repository, allow_private_urls=True)
    org = uuid.uuid4()
    webhook, _ = await service.create(org, "a", receiver.url, (WebhookEvent.FAILED,))
    await finish_job(repository, org, succeed=False)
    receiver.answers = (302, 503, 503)
    [row] = await deliveries(settings)
    # Three attempts: the first and two retries (the schedule has two delays)
    for attempts in range(3):
        await sender.deliver(row["delivery_id"], attempts)
    # Only the endpoint's own URL was called (the redirect's target never was)
    assert [headers["Host"] for headers, *_ in receiver.received] == [receiver.url.split("/")[2]] * 3
    assert len(receiver.received) == 3
    [delivery] = (await service.deliveries(org, webhook.webhook_id, limit=10, cursor=None)).items
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.next_attempt_at is None
    assert delivery.finished_at is not None
    assert delivery.attempts[0].status_code == 302
    assert f"to {receiver.url}/elsewhere" in (delivery.attempts[0].error or "")
    # The body of a failed job names no download
    assert orjson.loads(receiver.received[0][1])["data"]["downloadUrl"] is None
    assert (await service.get(org, webhook.webhook_id)).failing_since is not None


async def test_an_endpoint_failing_for_the_disable_period_is_disabled_with_its_waiting_deliveries(
    repository: JobRepository, sender: WebhookSender, settings: Settings, receiver: Receiver
) -> None:
    # Given an endpoint failing since over a day ago, with two deliveries waiting
    service = WebhookService(repository, allow_private_urls=True)
    org = uuid.uuid4()
    webhook, _ = await service.create(org, "a", receiver.url, (WebhookEvent.SUCCEEDED,))
    await finish_job(repository, org)
    await finish_job(repository, org)
    await sql(
        settings,
        "UPDATE analytics.webhook_endpoints SET failing_since = now() - interval '25 hours'",
    )
    receiver.answers = (500,)
    first, second = await deliveries(settings)
    # When one more attempt fails
    await sender.deliver(first["delivery_id"], 0)
    # Then the endpoint is disabled, says why, and gets nothing more
    disabled = await service.get(org, webhook.webhook_id)
    assert not disabled.enabled
    assert disabled.disabled_reason is not None
    assert disabled.disabled_reason.startswith(
        "every delivery attempt failed for 24 h (the last: answered 500"
    )
    assert {row["status"] for row in await deliveries(settings)} == {"failed"}
    await sender.deliver(second["delivery_id"], 0)
    assert len(receiver.received) == 1
    # Enabled again by its owner, it starts afresh (new events are delivered)
    enabled = await service.update(org, webhook.webhook_id, WebhookChange(enabled=True))
    assert (enabled.enabled, enabled.disabled_reason, enabled.failing_since) == (True, None, None)
    await finish_job(repository, org)
    assert [row["status"] for row in await deliveries(settings)] == ["failed", "failed", "pending"]


async def test_a_rotated_secret_signs_beside_the_new_one_during_the_grace(
    repository: JobRepository, sender: WebhookSender, settings: Settings, receiver: Receiver
) -> None:
    service = WebhookService(repository, allow_private_urls=True)
    org = uuid.uuid4()
    webhook, old = await service.create(org, "a", receiver.url, (WebhookEvent.SUCCEEDED,))
    rotated, new = await service.rotate_secret(org, webhook.webhook_id)
    assert new != old
    assert new.startswith("whsec_")
    assert rotated.previous_secret_expires_at is not None
    assert timedelta(hours=23) < rotated.previous_secret_expires_at - datetime.now(UTC) <= timedelta(hours=24)
    await finish_job(repository, org)
    [row] = await deliveries(settings)
    await sender.deliver(row["delivery_id"], 0)
    [(headers, body, _)] = receiver.received
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        webhook_signing.verify(secret, headers, body, now=time.time())
    # After the grace, only the new secret signs
    await sql(settings, "UPDATE analytics.webhook_endpoints SET previous_secret_expires_at = now()")
    await finish_job(repository, org)
    await sender.deliver((await deliveries(settings))[-1]["delivery_id"], 0)
    headers, body, _ = receiver.received[-1]
    assert len(headers["webhook-signature"].split()) == 1
    webhook_signing.verify(new, headers, body, now=time.time())
    with pytest.raises(webhook_signing.SignatureInvalid):
        webhook_signing.verify(old, headers, body, now=time.time())


async def test_loopback_and_private_addresses_are_refused_unless_allowed(
    repository: JobRepository, settings: Settings, webhook_settings: Settings, receiver: Receiver
) -> None:
    # The API refuses them at creation
    strict = WebhookService(repository, allow_private_urls=False)
    for url in (receiver.url, "https://10.1.2.3/hook", "https://localhost/hook", "https://[::1]/x"):
        with pytest.raises(ValidationFailed) as refused:
            await strict.create(uuid.uuid4(), "a", url, (WebhookEvent.SUCCEEDED,))
        assert set(refused.value.errors) == {"url"}
    # And a delivery to one (registered while allowed) is refused when connecting, not sent
    org = uuid.uuid4()
    allowing = WebhookService(repository, allow_private_urls=True)
    webhook, _ = await allowing.create(org, "a", receiver.url, (WebhookEvent.SUCCEEDED,))
    await finish_job(repository, org)
    strict_settings = replace(webhook_settings, webhook_allow_private_urls=False)
    client = WebhookClient(strict_settings)
    try:
        [row] = await deliveries(settings)
        await WebhookSender(repository, client, strict_settings, ExportMetrics()).deliver(
            row["delivery_id"], 0
        )
    finally:
        await client.close()
    assert receiver.received == []
    [delivery] = (await allowing.deliveries(org, webhook.webhook_id, limit=10, cursor=None)).items
    assert "loopback" in (delivery.attempts[0].error or "")


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1.nip.io.invalid"])
async def test_a_name_resolving_only_to_private_addresses_is_not_connected_to(name: str) -> None:
    class Resolving:  # what a name pointing inside the network resolves to
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
            return [
                {"hostname": host, "host": "127.0.0.1", "port": port, "family": 2, "proto": 0, "flags": 0}
            ]

        async def close(self) -> None: ...

    resolver = PublicResolver(Resolving())  # type: ignore[arg-type]
    with pytest.raises(OSError, match="resolves only to addresses webhooks may not reach"):
        await resolver.resolve(name, 443)


async def test_deliveries_page_newest_first(
    repository: JobRepository, settings: Settings, receiver: Receiver
) -> None:
    service = WebhookService(repository, allow_private_urls=True)
    org = uuid.uuid4()
    webhook, _ = await service.create(org, "a", receiver.url, (WebhookEvent.SUCCEEDED,))
    jobs = [await finish_job(repository, org) for _ in range(5)]
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await service.deliveries(org, webhook.webhook_id, limit=2, cursor=cursor)
        seen += [d.job_id for d in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == jobs[::-1]
    # Another org sees neither the endpoint nor its deliveries
    with pytest.raises(Exception, match="no such webhook"):
        await service.deliveries(uuid.uuid4(), webhook.webhook_id, limit=2, cursor=None)
