"""``analytics-exports schedule``: an org's export schedules through the REST API (create, list,
show, update, delete); each answer is printed as the API's JSON."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

import aiohttp

from cli.client import ExportsClient, run_and_print

#: Each action: its HTTP method, and whether it names a schedule.
ACTIONS: Mapping[str, tuple[str, bool]] = {
    "create": ("POST", False),
    "list": ("GET", False),
    "show": ("GET", True),
    "update": ("PATCH", True),
    "delete": ("DELETE", True),
}


@dataclass
class ScheduleCommand:
    api: str
    token: str
    org: str
    action: str
    schedule_id: str | None = None
    #: The fields to send (create, update), as the API names them.
    body: Mapping[str, object] | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def run(self) -> int:
        return run_and_print(
            f"analytics-exports schedule {self.action}",
            self._call,
            self.out,
            self.err,
            deleted=f"deleted export schedule {self.schedule_id}",
        )

    async def _call(self) -> object:
        method, named = ACTIONS[self.action]
        async with aiohttp.ClientSession() as session:
            client = ExportsClient(session, self.api, self.token, self.org)
            return await client.schedules(method, self.schedule_id if named else None, self.body)
