"""`make run` (``python -m devtools``): the whole service on one machine.

Starts a local S3 (moto server) when S3_ENDPOINT is unset, creates the database and buckets,
migrates, seeds demo rollups, runs API + worker + scheduler as child processes and prints the
next steps. Ctrl-C stops everything. (The CLI has already checked that PostgreSQL and RabbitMQ
answer.) Whatever stops it early is one line on stderr naming what failed and what to do.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from botocore.exceptions import BotoCoreError, ClientError

from devtools.local import PAGE_DOWNLOADS_CORS, port_in_use, start_moto, stop, wait_http
from service.api.auth import READ, WRITE, mint_token
from service.migrations import migrate_up
from service.repository import ensure_database, seed_demo
from service.settings import Settings
from service.storage import open_s3_client

DEV_S3_PORT = 9000
ROLES = ("api", "worker", "scheduler")
#: How long the local S3 stand-in and the API may take to answer.
S3_START_TIMEOUT_S = 15
API_READY_TIMEOUT_S = 30
#: moto ignores credentials, but the S3 client wants some.
LOCAL_S3_KEYS = {"S3_ACCESS_KEY": "dev", "S3_SECRET_KEY": "dev-secret"}


class DevError(Exception):
    """`make run` cannot go on; the message says what failed and what to do, in one line."""


async def _prepare(settings: Settings, demo_org: uuid.UUID) -> None:
    try:
        created = await ensure_database(settings.database_url)
        print(f"database: {'created' if created else 'exists'}; migrations: ", end="")
        applied = await migrate_up(
            settings.database_url,
            rollup_tables=settings.rollup_tables,
            billing_currency=settings.billing_currency,
        )
        print(", ".join(applied) or "up to date")
    except asyncpg.PostgresError as exc:
        raise DevError(f"PostgreSQL refused to prepare the database: {exc}") from exc
    where = settings.s3_endpoint or "AWS"
    try:
        async with open_s3_client(settings) as client:
            for bucket in settings.buckets:
                try:
                    await client.create_bucket(Bucket=bucket)
                except ClientError as exc:
                    if exc.response["Error"]["Code"] not in (
                        "BucketAlreadyOwnedByYou",
                        "BucketAlreadyExists",
                    ):
                        raise
                await client.put_bucket_cors(Bucket=bucket, CORSConfiguration=PAGE_DOWNLOADS_CORS)
    except ClientError as exc:
        raise DevError(f"S3 at {where} refused to create the buckets: {exc}") from exc
    except BotoCoreError as exc:
        raise DevError(
            f"S3 is not reachable at {where} (S3_ENDPOINT): {exc}; unset S3_ENDPOINT to use the local"
            " stand-in, or start that S3"
        ) from exc
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    rows = await seed_demo(
        settings.database_url,
        settings.rollup_tables,
        demo_org,
        8,
        (end - timedelta(days=40)).replace(hour=0),
        end,
        settings.billing_currency,
    )
    print(f"demo data: {rows} new hourly rollup rows for org {demo_org}")


def _start_local_s3(bin_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """The moto S3 server on 127.0.0.1:``port``, answering; or a DevError saying why not."""
    elsewhere = "or set S3_ENDPOINT (with S3_ACCESS_KEY, S3_SECRET_KEY) to an S3 you run"
    if not (bin_dir / "moto_server").exists():
        raise DevError(
            f"the local S3 stand-in (moto_server) is not installed in {bin_dir}: `make run` installs"
            f" it (pip install -e '.[dev]'), {elsewhere}"
        )
    if port_in_use("127.0.0.1", port):
        raise DevError(
            f"the local S3 stand-in cannot start: port {port} is already in use (another `make run`?);"
            f" stop that, set DEV_S3_PORT to a free port, {elsewhere}"
        )
    moto = start_moto(port)
    if not wait_http(f"http://127.0.0.1:{port}/moto-api/", timeout=S3_START_TIMEOUT_S, process=moto):
        code = moto.poll()
        stop(moto)
        why = (
            f"it exited with status {code}"
            if code is not None
            else f"no answer within {S3_START_TIMEOUT_S} s"
        )
        raise DevError(
            f"the local S3 stand-in (moto_server) did not start on 127.0.0.1:{port}: {why};"
            f" set DEV_S3_PORT to another port, {elsewhere}"
        )
    return moto


def run_dev(settings: Settings, demo_org: uuid.UUID) -> int:
    env = dict(os.environ)
    children: dict[str, subprocess.Popen[bytes]] = {}
    bin_dir = Path(sys.executable).parent
    try:
        if settings.s3_endpoint is None:
            raw_port = env.get("DEV_S3_PORT") or str(DEV_S3_PORT)
            if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
                raise DevError(f"DEV_S3_PORT must be a port number, not {raw_port!r}")
            port = int(raw_port)
            children["local S3"] = _start_local_s3(bin_dir, port)
            env.update(S3_ENDPOINT=f"http://127.0.0.1:{port}", **LOCAL_S3_KEYS)
            print(f"local S3: moto server on http://127.0.0.1:{port} (objects live in memory)")
        # Webhook receivers on this machine (a script on localhost) get deliveries.
        env.setdefault("WEBHOOK_ALLOW_PRIVATE_URLS", "true")
        # The demo's rollup tables are this run's own: it keeps them within the retention window.
        env.setdefault("ROLLUP_PRUNE", "true")
        if not env.get("AUTH_JWT_SECRET"):
            # A secret of this run's own: tokens minted for a `make run` die with it, and no
            # secret written anywhere can sign for this API.
            env["AUTH_JWT_SECRET"] = secrets.token_urlsafe(48)
        settings = Settings.from_env(env)
        if port_in_use(settings.http_host, settings.http_port):
            raise DevError(
                f"port {settings.http_port} is already in use (another `make run`?): stop that, or set"
                " HTTP_PORT to a free port"
            )
        # The API's metrics and readiness details go to a port of their own, next to the worker's.
        api_metrics_port = settings.metrics_port + 1 if settings.metrics_port else 0
        if api_metrics_port and port_in_use(settings.http_host, api_metrics_port):
            raise DevError(
                f"port {api_metrics_port} (the API's metrics, METRICS_PORT + 1) is already in use: stop"
                " that, or set METRICS_PORT to a free port"
            )
        asyncio.run(_prepare(settings, demo_org))
        for role in ROLES:
            role_env = {**env, "METRICS_PORT": str(api_metrics_port)} if role == "api" else env
            children[role] = subprocess.Popen([str(bin_dir / "analytics-exports"), role], env=role_env)
        base = f"http://127.0.0.1:{settings.http_port}"
        if not wait_http(base + "/readyz", timeout=API_READY_TIMEOUT_S, process=children["api"]):
            code = children["api"].poll()
            raise DevError(
                f"the API exited with status {code}; its message is above"
                if code is not None
                else f"the API was not ready within {API_READY_TIMEOUT_S} s; GET {base}/readyz says which"
                " check fails, and the log lines above say why"
            )
        token = mint_token(
            settings.signing_secret(),
            subject="finance@example.com",
            orgs=[demo_org],
            scopes=[READ, WRITE],
            issuer=settings.auth_jwt_issuer,
            audience=settings.auth_jwt_audience,
            ttl_seconds=12 * 3600,
        )
        steps = next_steps(base, demo_org, token, settings.signing_secret(), bin_dir, settings.metrics_port)
        print(steps + rabbitmq_console(settings), flush=True)
        stopping = False

        def on_signal(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stopping:
            for name, child in children.items():
                if (code := child.poll()) is not None:
                    print(
                        f"make run: the {name} exited (status {code}); stopping everything",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(0.5)
        return 0
    except DevError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make run: interrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        for child in reversed(children.values()):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children.values()):
            try:
                child.wait(timeout=70)
            except subprocess.TimeoutExpired:
                child.kill()


def export_command(bin_dir: Path, now: datetime | None = None) -> str:
    """The `analytics-exports export` line to paste: month to date, daily, with progress and the file."""
    now = now or datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    program = bin_dir / "analytics-exports"
    relative = os.path.relpath(program)
    shown = relative if not relative.startswith("..") else str(program)
    return (
        f"{shown} export --start {start:%Y-%m-%dT%H:%M:%SZ} --end {end:%Y-%m-%dT%H:%M:%SZ}"
        " --granularity daily --wait --download export.csv"
    )


def next_steps(
    base: str, org: uuid.UUID, token: str, secret: str, bin_dir: Path, metrics_port: int = 0
) -> str:
    if metrics_port:
        worker_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        api_metrics = f"http://127.0.0.1:{metrics_port + 1}/metrics"
    else:
        worker_metrics, api_metrics = "off (METRICS_PORT=0)", f"{base}/metrics"
    return NEXT_STEPS.format(
        base=base,
        org=org,
        token=token,
        secret=secret,
        export=export_command(bin_dir),
        steps=walkthrough_steps(),
        worker_metrics=worker_metrics,
        api_metrics=api_metrics,
    )


NEXT_STEPS = """
analytics-exports is running: API {base} (API, worker and scheduler log JSON lines above).

The page, signed in for the demo org (the link holds the token: keep it to yourself):

  {base}/analytics/#token={token}

In another shell, from this directory:

  export TOKEN={token}
  export ORG={org}
  export API={base}
  export AUTH_JWT_SECRET={secret}

(AUTH_JWT_SECRET is this run's own, made up at start: `analytics-exports token` mints more tokens
with it, and they stop working when this stops.)

Then ask for month-to-date cost per model, daily: a progress line shows the job running, and the
file is saved and checked against the SHA-256 the API vouches for:

  {export}

Or do the same by hand with curl (README.md, "Walkthrough"):
{steps}
Metrics (Prometheus text): API {api_metrics}, worker {worker_metrics}.
Ctrl-C stops everything.
"""
README = Path(__file__).resolve().parent.parent / "README.md"


#: RabbitMQ's management console (the plugin rabbitmq_management), on the broker's host.
CONSOLE_PORT = 15672


def rabbitmq_console(settings: Settings) -> str:
    """Where to watch the queues and connections, or how to turn the console on."""
    host = urlsplit(settings.rabbitmq_url).hostname or "127.0.0.1"
    if port_in_use(host, CONSOLE_PORT):
        return f"RabbitMQ console: http://{host}:{CONSOLE_PORT} (guest/guest on a local broker).\n"
    return "RabbitMQ console: off (`rabbitmq-plugins enable rabbitmq_management` turns it on).\n"


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
