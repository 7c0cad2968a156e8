"""``analytics-exports``: the command line, and the place where service and actors are composed
into processes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from cli.preflight import EXIT_UNAVAILABLE, unreachable_service
from service.errors import DatabaseUnavailable, MigrationMismatch, SettingsError
from service.job import DatasetSchema, ExportFormat
from service.logs import configure_logging
from service.migrations import migrate_down, migrate_up
from service.repository import seed_demo
from service.settings import Settings, parse_duration
from service.webhook import WebhookEvent

# Each command imports what its own process runs, inside the command: a worker never loads the
# API's modules, and the API and the scheduler never load the exporter's (pyarrow alone is ~50 MiB
# of resident memory; docs/performance.md).

log = logging.getLogger("analytics_exports")
DEMO_ORG = uuid.UUID("5f0c6d3e-2b1a-4c8e-9f3d-7a6b5c4d3e21")
OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
#: After draining, how long stopping the Dramatiq worker (threads, consumers) may take.
WORKER_STOP_TIMEOUT_MS = 10_000


def _stop_event() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal received, stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


# --- commands ---------------------------------------------------------------------------------------


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    if args.direction == "up":
        tables = settings.rollup_tables if args.with_rollups else None
        currency = settings.billing_currency
        done = asyncio.run(migrate_up(settings.database_url, rollup_tables=tables, billing_currency=currency))
        if tables is not None:
            print(f"rollup tables: {tables.hourly}, {tables.daily} (made where missing)")
        print("applied: " + (", ".join(done) or "nothing (up to date)"))
    else:
        steps = 10**6 if args.all else args.steps
        done = asyncio.run(migrate_down(settings.database_url, steps))
        print("rolled back: " + (", ".join(done) or "nothing"))
    return 0


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from aiohttp import web

    from actors.broker import create_broker
    from actors.job_queue import DramatiqJobQueue
    from actors.tasks import declare_actors
    from service.api.app import create_app
    from service.api.server import serve

    broker = create_broker(settings, "api")
    actors = declare_actors(broker, settings, context=None)
    queue = DramatiqJobQueue(actors.run_export, settings.rabbitmq_url)
    app = create_app(settings, queue)

    async def close_queue(_: web.Application) -> None:
        await queue.close()
        broker.close()

    app.on_cleanup.append(close_queue)
    try:
        serve(app, settings)
    except OSError as exc:
        ports = f"{settings.http_port}" + (f" or {settings.metrics_port}" if settings.metrics_port else "")
        print(
            f"analytics-exports api: cannot listen on {settings.http_host} port {ports}: {exc.strerror};"
            " set HTTP_PORT (and METRICS_PORT) to free ports",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from dramatiq import Worker
    from dramatiq.asyncio import get_event_loop_thread

    from actors.broker import create_broker
    from actors.context import WorkerContext
    from actors.tasks import declare_actors

    broker = create_broker(settings, "worker")
    context = WorkerContext(settings)
    broker.add_middleware(context)  # after AsyncIO: closes before the loop stops
    declare_actors(broker, settings, context)
    concurrency = settings.export_worker_concurrency
    worker = Worker(broker, queues={settings.queue_name}, worker_threads=concurrency, worker_timeout=1000)
    # Prefetch no more than we can run: a long export must not hold other messages hostage.
    worker.queue_prefetch = concurrency
    stop = _stop_event()
    worker.start()
    log.info("worker started", extra={"queue": settings.queue_name, "concurrency": concurrency})
    stop.wait()
    # Drain first, while the consumers still run: running exports get the grace period, then are
    # handed back; messages that arrive meanwhile are sent back for another worker.
    grace = settings.export_shutdown_grace
    log.info("worker draining", extra={"grace_s": grace})
    loop_thread = get_event_loop_thread()
    if loop_thread is not None:
        loop_thread.run_coroutine(context.drain(grace))
    worker.stop(timeout=WORKER_STOP_TIMEOUT_MS)
    broker.close()
    log.info("worker stopped")
    return 0


def cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from actors.broker import create_broker
    from actors.scheduler import run_scheduler
    from actors.tasks import declare_actors

    broker = create_broker(settings, "scheduler")
    actors = declare_actors(broker, settings, context=None)
    run_scheduler(actors, settings.export_worker_interval, _stop_event())
    broker.close()
    return 0


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from service.api.auth import READ, WRITE, mint_token

    ttl = int(parse_duration("--ttl", args.ttl))
    print(
        mint_token(
            settings.signing_secret(),
            subject=args.sub,
            orgs=args.org,
            scopes=(args.scope or f"{READ} {WRITE}").split(),
            issuer=settings.auth_jwt_issuer,
            audience=settings.auth_jwt_audience,
            ttl_seconds=ttl,
        )
    )
    return 0


def cmd_seed_demo(settings: Settings, args: argparse.Namespace) -> int:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = (end - timedelta(days=args.days)).replace(hour=0)
    rows = asyncio.run(
        seed_demo(
            settings.database_url,
            settings.rollup_tables,
            args.org,
            args.models,
            start,
            end,
            settings.billing_currency,
        )
    )
    print(f"seeded {rows} hourly rollup rows for org {args.org} ({start:%Y-%m-%d} to {end:%Y-%m-%dT%H:%MZ})")
    return 0


def cmd_openapi(settings: Settings, args: argparse.Namespace) -> int:
    import orjson

    from service.api.routes import openapi_document

    text = orjson.dumps(openapi_document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
    if args.check:
        if not OPENAPI_PATH.exists() or OPENAPI_PATH.read_text() != text:
            print(f"{OPENAPI_PATH} is out of date: run `analytics-exports openapi`", file=sys.stderr)
            return 1
        return 0
    OPENAPI_PATH.write_text(text)
    print(f"wrote {OPENAPI_PATH}")
    return 0


def _has_api_client_args(args: argparse.Namespace, command: str) -> bool:
    """Whether a REST client command has --api, --token and --org (or API, TOKEN, ORG); says
    which are missing if not."""
    missing = [
        f"--{name} (or {variable})"
        for name, variable in (("api", "API"), ("token", "TOKEN"), ("org", "ORG"))
        if not getattr(args, name)
    ]
    if missing:
        print(
            f"analytics-exports {command}: missing {', '.join(missing)}; `make run` prints the"
            " `export API=... TOKEN=... ORG=...` lines to paste",
            file=sys.stderr,
        )
    return not missing


def cmd_export(args: argparse.Namespace) -> int:
    """A client of the REST API: it needs none of the service's settings or connections."""
    from cli.client import EXIT_USAGE, CreateExportBody, ExportCommand

    if not _has_api_client_args(args, "export"):
        return EXIT_USAGE
    request = CreateExportBody(
        args.start,
        args.end,
        args.granularity,
        tuple(args.model),
        args.idempotency_key,
        args.time_zone,
        args.format,
        args.schema,
    )
    command = ExportCommand(
        args.api,
        args.token,
        args.org,
        request,
        wait=args.wait,
        download=args.download,
        interval=args.poll_interval,
        timeout=args.timeout,
    )
    return command.run()


def cmd_schedule(args: argparse.Namespace) -> int:
    """An org's export schedules, through the REST API (a client, like ``export``)."""
    from cli.client import EXIT_USAGE
    from cli.schedules import ScheduleCommand

    if not _has_api_client_args(args, "schedule"):
        return EXIT_USAGE
    fields = {
        "cadence": args.cadence,
        "period": args.period,
        "granularity": args.granularity,
        "timeZone": args.time_zone,
        "runAtHour": args.run_at_hour,
        "format": args.format,
        "schema": args.schema,
        "models": args.model or None,
        "enabled": args.enabled,
    }
    body: dict[str, object] = {name: value for name, value in fields.items() if value is not None}
    if args.all_models:
        body["models"] = None  # every model, whatever the schedule had
    if args.action in ("create", "update") and not body:
        print(f"analytics-exports schedule {args.action}: give the fields to set", file=sys.stderr)
        return EXIT_USAGE
    if args.action in ("show", "update", "delete") and not args.schedule_id:
        print(f"analytics-exports schedule {args.action}: which schedule? give its id", file=sys.stderr)
        return EXIT_USAGE
    command = ScheduleCommand(
        args.api,
        args.token,
        args.org,
        args.action,
        args.schedule_id,
        body if args.action in ("create", "update") else None,
    )
    return command.run()


def cmd_webhook(args: argparse.Namespace) -> int:
    """An org's webhook endpoints, through the REST API (a client, like ``export``)."""
    from cli.client import EXIT_USAGE
    from cli.webhooks import WebhookCommand

    if not _has_api_client_args(args, "webhook"):
        return EXIT_USAGE
    fields = {"url": args.url, "events": args.events, "enabled": args.enabled}
    body: dict[str, object] = {name: value for name, value in fields.items() if value is not None}
    if args.action in ("create", "update") and not body:
        print(f"analytics-exports webhook {args.action}: give the fields to set", file=sys.stderr)
        return EXIT_USAGE
    if args.action not in ("create", "list") and not args.webhook_id:
        print(f"analytics-exports webhook {args.action}: which webhook? give its id", file=sys.stderr)
        return EXIT_USAGE
    query = {"limit": args.limit, "cursor": args.cursor}
    command = WebhookCommand(
        args.api,
        args.token,
        args.org,
        args.action,
        args.webhook_id,
        body if args.action in ("create", "update") else None,
        query if args.action == "deliveries" else None,
    )
    return command.run()


def cmd_verify(args: argparse.Namespace) -> int:
    """Check a downloaded export against its manifest; needs nothing but the two files."""
    from cli.client import EXIT_USAGE
    from cli.verification import VerificationError, load_manifest, verify

    try:
        report = verify(args.file, load_manifest(args.manifest))
    except VerificationError as exc:
        print(f"analytics-exports verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for check in report.checks:
        print(f"ok        {check}")
    for problem in report.problems:
        print(f"MISMATCH  {problem}")
    if not report.ok:
        print(f"NOT verified: {args.file} does not match {args.manifest}", file=sys.stderr)
        return 1
    print(f"verified: {args.file} matches {args.manifest}")
    return 0


def _seconds(raw: str) -> float:
    try:
        return parse_duration("value", raw)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("value: ")) from None


def _events(raw: str) -> list[str]:
    """``--events``: comma-separated event names, each one the API knows."""
    events = [name.strip() for name in raw.split(",") if name.strip()]
    known = [event.value for event in WebhookEvent]
    unknown = [name for name in events if name not in known]
    if unknown or not events:
        given = f"unknown event {', '.join(map(repr, unknown))}; " if unknown else ""
        raise argparse.ArgumentTypeError(f"{given}give one or more of {', '.join(known)}, comma-separated")
    twice = sorted({name for name in events if events.count(name) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(twice)} given more than once")
    return events


EXPORT_EPILOG = """\
--api, --token and --org default to the API, TOKEN and ORG variables `make run` prints.

exit status: 0 the export succeeded (without --wait: the API accepted it); 1 it failed, was
cancelled or expired; 2 bad arguments, or the API refused the request (4xx: its title and detail
are printed); 3 the API could not be reached or answered 429/5xx, the download failed or did not
match the checksum, or --timeout passed (the export itself goes on); 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="analytics-exports", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    migrate = sub.add_parser("migrate", help="apply or roll back schema migrations")
    migrate.add_argument("direction", choices=["up", "down"])
    migrate.add_argument("--steps", type=int, default=1, help="migrations to roll back (down; default 1)")
    migrate.add_argument("--all", action="store_true", help="roll back every migration (down)")
    migrate.add_argument(
        "--with-rollups",
        action="store_true",
        help="up: first make the rollup tables (ROLLUP_HOURLY_TABLE, ROLLUP_DAILY_TABLE) where missing,"
        " for development and demos; the platform's own rollup tables need no such step",
    )
    migrate.set_defaults(func=cmd_migrate)
    sub.add_parser("api", help="serve the REST API on HTTP_PORT").set_defaults(func=cmd_api)
    sub.add_parser("worker", help="run export actors (EXPORT_WORKER_CONCURRENCY at once)").set_defaults(
        func=cmd_worker
    )
    sub.add_parser("scheduler", help="send periodic expiry and sweep ticks").set_defaults(func=cmd_scheduler)
    token = sub.add_parser("token", help="mint a bearer token signed with AUTH_JWT_SECRET")
    token.add_argument("--org", type=uuid.UUID, action="append", required=True, help="org UUID (repeatable)")
    token.add_argument("--sub", required=True, help="the caller's name (becomes requestedBy)")
    token.add_argument("--scope", help="space-separated scopes (default: every scope, read and write)")
    token.add_argument("--ttl", default="12h", help="lifetime, e.g. 1h (default 12h)")
    token.set_defaults(func=cmd_token)
    seed = sub.add_parser("seed-demo", help="insert realistic demo rollups")
    seed.add_argument("--org", type=uuid.UUID, default=DEMO_ORG)
    seed.add_argument("--days", type=int, default=40)
    seed.add_argument("--models", type=int, default=8)
    seed.set_defaults(func=cmd_seed_demo)
    openapi = sub.add_parser("openapi", help="write openapi/openapi.json from the code")
    openapi.add_argument("--check", action="store_true", help="fail if the committed file is out of date")
    openapi.set_defaults(func=cmd_openapi)
    export = sub.add_parser(
        "export",
        help="request an export over the REST API; --wait shows its progress, --download checks the file",
        description="Request an export from the REST API, as any client would; with --wait, follow it\n"
        "with a progress line; with --download, save the file and check it against the API's SHA-256.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--api", default=os.environ.get("API"), help="API base URL (default: $API)")
    export.add_argument("--token", default=os.environ.get("TOKEN"), help="bearer token (default: $TOKEN)")
    export.add_argument("--org", default=os.environ.get("ORG"), help="org UUID (default: $ORG)")
    export.add_argument("--start", required=True, help="inclusive, RFC 3339: 2026-10-01T00:00:00Z")
    export.add_argument("--end", required=True, help="exclusive, RFC 3339, at most 31 days after --start")
    export.add_argument("--granularity", required=True, choices=["hourly", "daily", "monthly"])
    export.add_argument(
        "--time-zone",
        metavar="ZONE",
        help="IANA time zone of the daily and monthly buckets, e.g. Europe/Berlin (default: UTC)",
    )
    export.add_argument(
        "--format",
        choices=[f.value for f in ExportFormat],
        help="csv (default), csv.gz (the same CSV, gzip-compressed) or parquet (typed columns)",
    )
    export.add_argument(
        "--schema",
        choices=[d.value for d in DatasetSchema],
        help="native (default) or focus-1.0 (the FinOps FOCUS 1.0 columns, in UTC)",
    )
    export.add_argument(
        "--model", action="append", default=[], help="only this model (repeatable; default: every model)"
    )
    export.add_argument(
        "--idempotency-key",
        help="makes running the command again safe: the same key returns the same job for 24 h "
        "(default: a new key per run, so the command itself can resend its request)",
    )
    export.add_argument(
        "--wait", action="store_true", help="wait until the export is finished, with progress"
    )
    export.add_argument(
        "--download",
        type=Path,
        metavar="FILE",
        help="then save the file here, check its SHA-256, save its manifest beside it"
        " (FILE.manifest.json) and check the file's rows and totals against it (implies --wait)",
    )
    export.add_argument(
        "--poll-interval", type=_seconds, default=0.5, metavar="DURATION", help="between polls (default 0.5s)"
    )
    export.add_argument(
        "--timeout",
        type=_seconds,
        metavar="DURATION",
        help="stop waiting after this long, e.g. 10m (default: never)",
    )
    schedule = sub.add_parser(
        "schedule",
        help="create, list, show, update or delete the org's export schedules over the REST API",
        description="Recurring exports (docs/api.md#schedules): each run makes one export of its period.\n"
        "create needs --cadence, --period and --granularity; update sends only the fields given.",
        epilog="exit status: 0 done; 2 bad arguments or the API refused (4xx); 3 the API could not be "
        "reached or answered 429/5xx.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    schedule.add_argument("action", choices=["create", "list", "show", "update", "delete"])
    schedule.add_argument("schedule_id", nargs="?", metavar="SCHEDULE_ID", help="show, update, delete")
    schedule.add_argument("--api", default=os.environ.get("API"), help="API base URL (default: $API)")
    schedule.add_argument("--token", default=os.environ.get("TOKEN"), help="bearer token (default: $TOKEN)")
    schedule.add_argument("--org", default=os.environ.get("ORG"), help="org UUID (default: $ORG)")
    schedule.add_argument("--cadence", choices=["daily", "weekly", "monthly"])
    schedule.add_argument(
        "--period", choices=["previous_day", "previous_week", "previous_month", "month_to_date"]
    )
    schedule.add_argument("--granularity", choices=["hourly", "daily", "monthly"])
    schedule.add_argument("--time-zone", help="IANA zone of the runs and periods (default UTC)")
    schedule.add_argument("--run-at-hour", type=int, help="local hour of the runs, 0-23 (default 6)")
    schedule.add_argument("--format", choices=[f.value for f in ExportFormat])
    schedule.add_argument("--schema", choices=[d.value for d in DatasetSchema])
    models = schedule.add_mutually_exclusive_group()
    models.add_argument("--model", action="append", default=[], help="a model id (repeatable)")
    models.add_argument("--all-models", action="store_true", help="every model (update: clear --model)")
    enabled = schedule.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_const", const=True, default=None)
    enabled.add_argument("--disable", dest="enabled", action="store_const", const=False)
    webhook = sub.add_parser(
        "webhook",
        help="create, list, show, update or delete the org's webhook endpoints, rotate their secret"
        " or list their deliveries over the REST API",
        description="Webhook endpoints: each gets a signed POST when one of the org's exports succeeds,\n"
        "fails, is restated or is cancelled. create needs --url and --events; update sends only the\n"
        "fields given.\n"
        "create and rotate-secret answer with the signing secret, which no other answer shows.",
        epilog="exit status: 0 done; 2 bad arguments or the API refused (4xx); 3 the API could not be "
        "reached or answered 429/5xx.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    webhook.add_argument(
        "action", choices=["create", "list", "show", "update", "delete", "rotate-secret", "deliveries"]
    )
    webhook.add_argument(
        "webhook_id", nargs="?", metavar="WEBHOOK_ID", help="show, update, delete, rotate-secret, deliveries"
    )
    webhook.add_argument("--api", default=os.environ.get("API"), help="API base URL (default: $API)")
    webhook.add_argument("--token", default=os.environ.get("TOKEN"), help="bearer token (default: $TOKEN)")
    webhook.add_argument("--org", default=os.environ.get("ORG"), help="org UUID (default: $ORG)")
    webhook.add_argument("--url", help="where deliveries are POSTed: an https:// URL of a public host")
    webhook.add_argument(
        "--events",
        type=_events,
        metavar="EVENT,...",
        help=f"the events it gets, comma-separated: {', '.join(e.value for e in WebhookEvent)}",
    )
    enabled = webhook.add_mutually_exclusive_group()
    enabled.add_argument(
        "--enable",
        dest="enabled",
        action="store_const",
        const=True,
        default=None,
        help="update: deliver to it again",
    )
    enabled.add_argument(
        "--disable", dest="enabled", action="store_const", const=False, help="update: stop delivering to it"
    )
    webhook.add_argument("--limit", type=int, help="deliveries: how many, newest first")
    webhook.add_argument("--cursor", help="deliveries: the nextCursor of the page before")
    verify_command = sub.add_parser(
        "verify",
        help="check a downloaded export against its manifest: bytes, SHA-256, rows and every total",
        description="Recompute everything from FILE (size, SHA-256, rows, totals per currency,\n"
        "exactly) and compare it with what MANIFEST states; GET .../exports/{jobId}/manifest gives it.",
        epilog="exit status: 0 everything matches; 1 something differs (named); 2 a file cannot be read.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify_command.add_argument("file", type=Path, metavar="FILE", help="the export as downloaded")
    verify_command.add_argument("--manifest", type=Path, required=True, metavar="MANIFEST")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "export":
        return cmd_export(args)
    if args.command == "verify":
        return cmd_verify(args)
    if args.command == "schedule":
        return cmd_schedule(args)
    if args.command == "webhook":
        return cmd_webhook(args)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"analytics-exports: invalid configuration: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "api":
            settings.require_token_verification()
    except SettingsError as exc:
        print(f"analytics-exports: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, args.command)
    problem = unreachable_service(settings, args.command)
    if problem is not None:
        print(f"analytics-exports {args.command}: {problem}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        result: int = args.func(settings, args)
    except SettingsError as exc:  # a setting this command needs (AUTH_JWT_SECRET for api, token)
        print(f"analytics-exports {args.command}: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:  # it went away between the check and the start
        print(f"analytics-exports {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except MigrationMismatch as exc:
        print(f"analytics-exports {args.command}: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
