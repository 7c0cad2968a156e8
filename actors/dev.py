"""``analytics-exports dev``: the whole service on one machine, for `make run`.

Starts a local S3 (moto server) when S3_ENDPOINT is unset, creates the database and buckets,
migrates, seeds demo rollups, runs API + worker + scheduler as child processes and prints a
walkthrough. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from botocore.exceptions import ClientError

from actors.localdev import start_moto, wait_http
from service.api.auth import READ, WRITE, mint_token
from service.migrations import migrate_up
from service.repository import ensure_database, seed_demo
from service.settings import Settings
from service.storage import open_s3_client

DEV_S3_PORT = 9000
ROLES = ("api", "worker", "scheduler")


async def _prepare(settings: Settings, demo_org: uuid.UUID) -> None:
    from datetime import UTC, datetime, timedelta

    created = await ensure_database(settings.database_url)
    print(f"database: {'created' if created else 'exists'}; migrations: ", end="")
    print(", ".join(await migrate_up(settings.database_url)) or "up to date")
    async with open_s3_client(settings) as client:
        for bucket in sorted({settings.s3_bucket, *settings.s3_bucket_overrides.values()}):
            try:
                await client.create_bucket(Bucket=bucket)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    rows = await seed_demo(
        settings.database_url, demo_org, 8, (end - timedelta(days=40)).replace(hour=0), end
    )
    print(f"demo data: {rows} new hourly rollup rows for org {demo_org}")


def run_dev(settings: Settings, demo_org: uuid.UUID) -> int:
    env = dict(os.environ)
    children: list[subprocess.Popen[bytes]] = []
    bin_dir = Path(sys.executable).parent
    if settings.s3_endpoint is None:
        port = int(env.get("DEV_S3_PORT", DEV_S3_PORT))
        moto = start_moto(port)
        children.append(moto)
        env.update(S3_ENDPOINT=f"http://127.0.0.1:{port}", S3_ACCESS_KEY="dev", S3_SECRET_KEY="dev-secret")  # noqa: S106 (moto ignores credentials)
        if not wait_http(f"http://127.0.0.1:{port}/moto-api/", timeout=15):
            moto.terminate()
            print(f"local S3 (moto_server) did not start on port {port}", file=sys.stderr)
            return 1
        print(f"local S3: moto server on http://127.0.0.1:{port} (objects live in memory)")
    settings = Settings.from_env(env)
    try:
        asyncio.run(_prepare(settings, demo_org))
        for role in ROLES:
            children.append(subprocess.Popen([str(bin_dir / "analytics-exports"), role], env=env))
        base = f"http://127.0.0.1:{settings.http_port}"
        if not wait_http(base + "/readyz", timeout=30):
            print("the API did not become ready; see the logs above", file=sys.stderr)
            return 1
        token = mint_token(
            settings.auth_jwt_secret,
            subject="finance@example.com",
            orgs=[demo_org],
            scopes=[READ, WRITE],
            issuer=settings.auth_jwt_issuer,
            audience=settings.auth_jwt_audience,
            ttl_seconds=12 * 3600,
        )
        print(WALKTHROUGH.format(base=base, org=demo_org, token=token, steps=walkthrough_steps()), flush=True)
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping:
            if any(child.poll() is not None for child in children):
                print("a child process exited; stopping everything", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=70)
            except subprocess.TimeoutExpired:
                child.kill()


WALKTHROUGH = """
analytics-exports is running: API {base} (API, worker and scheduler log JSON lines above).

In another shell, from this directory:

  export TOKEN={token}
  export ORG={org}
  export API={base}
{steps}
Ctrl-C stops everything.
"""
README = Path(__file__).resolve().parent.parent / "README.md"


def walkthrough_steps() -> str:
    """The README's walkthrough block (the single source, run verbatim by a test), indented."""
    try:
        text = README.read_text("utf-8")
    except OSError:
        return "\n  then follow the walkthrough in README.md\n"
    match = re.search(r"<!-- walkthrough:start -->\s*```sh\n(.*?)```", text, re.DOTALL)
    if not match:
        return "\n  then follow the walkthrough in README.md\n"
    return "\n" + "".join(f"  {line}" if line.strip() else line for line in match.group(1).splitlines(True))
