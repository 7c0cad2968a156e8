"""``analytics-exports webhook``: an org's webhook endpoints through the REST API (create, list,
show, update, delete, rotate-secret, deliveries); each answer is printed as the API's JSON."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

import aiohttp

from cli.client import ExportsClient, run_and_print

#: Each action: its HTTP method, whether it names a webhook, and the webhook's sub-resource it
#: calls (None: the webhook, or the org's list of them).
ACTIONS: Mapping[str, tuple[str, bool, str | None]] = {
    "create": ("POST", False, None),
    "list": ("GET", False, None),
    "show": ("GET", True, None),
    "update": ("PATCH", True, None),
    "delete": ("DELETE", True, None),
    "rotate-secret": ("POST", True, "rotate-secret"),
    "deliveries": ("GET", True, "deliveries"),
}
#: The actions whose answer holds the signing secret, which the API shows in no other answer.
SHOWS_SECRET = frozenset({"create", "rotate-secret"})


@dataclass
class WebhookCommand:
    api: str
    token: str
    org: str
    action: str
    webhook_id: str | None = None
    #: The fields to send (create, update), as the API names them.
    body: Mapping[str, object] | None = None
    #: The query parameters (deliveries: limit, cursor), as the API names them.
    query: Mapping[str, object] | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def run(self) -> int:
        status = run_and_print(
            f"analytics-exports webhook {self.action}",
            self._call,
            self.out,
            self.err,
            deleted=f"deleted webhook {self.webhook_id}",
        )
        if status == 0 and self.action in SHOWS_SECRET:
            print(
                f"analytics-exports webhook {self.action}: keep the secret now: the API shows it only"
                " this once (`webhook rotate-secret` makes a new one)",
                file=self.err,
            )
        return status

    async def _call(self) -> object:
        method, named, sub_resource = ACTIONS[self.action]
        async with aiohttp.ClientSession() as session:
            client = ExportsClient(session, self.api, self.token, self.org)
            return await client.webhooks(
                method,
                self.webhook_id if named else None,
                self.body,
                action=sub_resource,
                query=self.query,
            )
