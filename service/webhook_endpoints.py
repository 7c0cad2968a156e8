"""The API's webhook use cases: an org's endpoints (created with a secret shown once, rotated with
a grace period), and the deliveries each one got."""

from __future__ import annotations

import logging
import uuid

from service import webhook_signing
from service.errors import NotFound, ValidationFailed
from service.repository import JobRepository
from service.webhook import (
    MAX_WEBHOOKS_PER_ORG,
    ROTATION_GRACE,
    AddressRefused,
    DeliveryPage,
    Webhook,
    WebhookChange,
    WebhookEvent,
    check_url,
)

log = logging.getLogger(__name__)


class WebhookService:
    def __init__(self, repository: JobRepository, *, allow_private_urls: bool) -> None:
        self._repository = repository
        self._allow_private = allow_private_urls

    def _url(self, url: str) -> str:
        try:
            check_url(url, allow_private=self._allow_private)
        except AddressRefused as exc:
            raise ValidationFailed(f"url {exc}", errors={"url": str(exc)}) from None
        return url

    async def create(
        self, org_id: uuid.UUID, created_by: str, url: str, events: tuple[WebhookEvent, ...]
    ) -> tuple[Webhook, str]:
        """A new endpoint and its signing secret (which no answer shows again)."""
        secret = webhook_signing.new_secret()
        webhook = await self._repository.create_webhook(
            uuid.uuid4(), org_id, created_by, self._url(url), events, secret, MAX_WEBHOOKS_PER_ORG
        )
        log.info(
            "webhook created",
            extra={"webhook_id": str(webhook.webhook_id), "org_id": str(org_id), "events": list(events)},
        )
        return webhook, secret

    async def get(self, org_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook:
        webhook = await self._repository.get_webhook(org_id, webhook_id)
        if webhook is None:
            raise NotFound("no such webhook")
        return webhook

    async def all_of(self, org_id: uuid.UUID) -> list[Webhook]:
        return await self._repository.list_webhooks(org_id, MAX_WEBHOOKS_PER_ORG)

    async def update(self, org_id: uuid.UUID, webhook_id: uuid.UUID, change: WebhookChange) -> Webhook:
        if change.url is not None:
            self._url(change.url)
        webhook = await self._repository.update_webhook(org_id, webhook_id, change)
        if webhook is None:
            raise NotFound("no such webhook")
        return webhook

    async def delete(self, org_id: uuid.UUID, webhook_id: uuid.UUID) -> None:
        if not await self._repository.delete_webhook(org_id, webhook_id):
            raise NotFound("no such webhook")

    async def rotate_secret(self, org_id: uuid.UUID, webhook_id: uuid.UUID) -> tuple[Webhook, str]:
        """A new secret; deliveries carry a signature with the old one too for ROTATION_GRACE."""
        secret = webhook_signing.new_secret()
        webhook = await self._repository.rotate_webhook_secret(
            org_id, webhook_id, secret, ROTATION_GRACE.total_seconds()
        )
        if webhook is None:
            raise NotFound("no such webhook")
        log.info("webhook secret rotated", extra={"webhook_id": str(webhook_id), "org_id": str(org_id)})
        return webhook, secret

    async def deliveries(
        self, org_id: uuid.UUID, webhook_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> DeliveryPage:
        await self.get(org_id, webhook_id)  # another org's, or none: 404 (not an empty page)
        return await self._repository.deliveries(org_id, webhook_id, limit=limit, cursor=cursor)
