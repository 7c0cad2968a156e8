"""The webhook Transport on aiohttp's client: one session per worker, no redirects, no proxies from
the environment, no cookies, a timeout per attempt, and only public addresses (unless
WEBHOOK_ALLOW_PRIVATE_URLS)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from service.settings import Settings
from service.webhook import Unreachable, refused_ip

USER_AGENT: Final = "analytics-exports-webhooks/1"
#: Concurrent connections one worker holds to all receivers, and to any one of them.
MAX_CONNECTIONS: Final = 50
MAX_CONNECTIONS_PER_HOST: Final = 4


class PublicResolver(AbstractResolver):
    """Resolves a host name only to its public addresses, so a delivery never connects to a
    loopback, private or reserved address a public-looking name points to (checked as the
    connection is made: a name that changes what it resolves to cannot slip by)."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [result for result in found if refused_ip(result["host"]) is None]
        if not public:
            raise OSError(f"{host} resolves only to addresses webhooks may not reach")
        return public

    async def close(self) -> None:
        await self._inner.close()


class WebhookClient:
    """A :class:`service.webhook_delivery.Transport`. Open it on the loop that uses it."""

    def __init__(self, settings: Settings) -> None:
        self._timeout = settings.webhook_timeout
        connector = aiohttp.TCPConnector(
            limit=MAX_CONNECTIONS,
            limit_per_host=MAX_CONNECTIONS_PER_HOST,
            resolver=None if settings.webhook_allow_private_urls else PublicResolver(),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str | None]:
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as reply:
                return reply.status, reply.headers.get("Location")
        except TimeoutError:
            raise Unreachable(f"no answer within {self._timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        await self._session.close()
