"""``analytics-exports schedule``: an org's export schedules through the REST API (create, list,
show, update, delete); each answer is printed as the API's JSON."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

import aiohttp
import orjson

from cli.client import CommandError, ExportsClient

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
        try:
            answer = asyncio.run(self._call())
        except CommandError as exc:
            print(f"analytics-exports schedule {self.action}: {exc}", file=self.err)
            return exc.exit_code
        if answer is None:
            print(f"deleted export schedule {self.schedule_id}", file=self.out)
        else:
            self.out.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0

    async def _call(self) -> object:
        method, named = ACTIONS[self.action]
        async with aiohttp.ClientSession() as session:
            client = ExportsClient(session, self.api, self.token, self.org)
            return await client.schedules(method, self.schedule_id if named else None, self.body)
