"""The limit for GET one job: a minimal aiohttp handler doing the same single-row lookup through
asyncpg, in the same process model as ``analytics-exports api`` (one process, asyncio's loop, a
pool of the API's size, no access log). No authentication, validation, metrics or problem
documents: what is left is what aiohttp, asyncpg and JSON cost.

    .venv/bin/python -m bench.api_limit --port 8099 --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator
from typing import Final

import asyncpg
import orjson
from aiohttp import web

from service.repository import create_pool
from service.sql import QUERIES

POOL: Final = web.AppKey("pool", asyncpg.Pool)
#: The API's pool size (service/api/app.py).
POOL_SIZE: Final = 10


async def get_job(request: web.Request) -> web.Response:
    try:
        org_id, job_id = uuid.UUID(request.match_info["org"]), uuid.UUID(request.match_info["job"])
    except ValueError:
        raise web.HTTPBadRequest() from None
    row = await request.app[POOL].fetchrow(QUERIES["get_job"], org_id, job_id)
    if row is None:
        raise web.HTTPNotFound()
    return web.Response(body=orjson.dumps(dict(row), default=str), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app(database_url: str) -> web.Application:
    async def pool(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = await create_pool(database_url, max_size=POOL_SIZE)
        yield
        await app[POOL].close()

    app = web.Application()
    app.cleanup_ctx.append(pool)
    app.router.add_get("/analytics/v1/orgs/{org}/exports/{job}", get_job)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_limit", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    web.run_app(create_app(args.database_url), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
