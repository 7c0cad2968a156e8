"""A webhook receiver on loopback (a real aiohttp server) whose answers a test chooses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

#: Three times the tests' WEBHOOK_TIMEOUT (2 s): an attempt that surely gets no answer in time,
#: while the answers that should arrive have a loaded machine's margin.
SLOW_SECONDS = 6


@dataclass
class Receiver:
    """Answers the attempts of each delivery (told apart by webhook-id) with ``answers`` in turn:
    a status code (302 redirects to ``url``/elsewhere), or "slow" (no answer within the timeout);
    then 200. Keeps every request: its headers, its body and what it was answered."""

    url: str = ""
    answers: tuple[int | str, ...] = ()
    received: list[tuple[dict[str, str], bytes, int | str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        message = request.headers.get("webhook-id")
        earlier = sum(1 for headers, *_ in self.received if headers.get("webhook-id") == message)
        answer = self.answers[earlier] if earlier < len(self.answers) else 200
        self.received.append((dict(request.headers), await request.read(), answer))
        if answer == "slow":
            await asyncio.sleep(SLOW_SECONDS)
            return web.Response(status=200)
        if answer == 302:
            return web.Response(status=302, headers={"Location": self.url + "/elsewhere"})
        return web.Response(status=int(answer))

    def accepted(self) -> list[tuple[dict[str, str], bytes, int | str]]:
        return [r for r in self.received if r[2] == 200]


@asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/exports", receiver.handle)
    app.router.add_post("/hooks/exports/elsewhere", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/exports"
    try:
        yield receiver
    finally:
        await runner.cleanup()
