"""Start-up checks: a command that needs PostgreSQL or RabbitMQ says in one line which one is
missing, where it looked (without passwords) and how to start it, instead of a traceback."""

from __future__ import annotations

import asyncio
import logging
import socket
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pika
import pika.exceptions

from service.rollups import RollupTables
from service.settings import Settings

log = logging.getLogger(__name__)
#: How long the start-up check waits for PostgreSQL or RabbitMQ to answer.
PROBE_TIMEOUT_S = 5.0
#: A service the command needs is unreachable (or refuses us) at start.
EXIT_UNAVAILABLE = 1


def redact(url: str) -> str:
    """``url`` with its password (in the user info or a ``password`` parameter) replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    query = urlencode(
        [
            (k, "***" if k.lower() == "password" else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _address(url: str, default_port: int) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or default_port}"


def _failure(exc: BaseException) -> str:
    """Why a connection failed, in a few words: the OSError may sit deep in the driver's wrapping."""
    pending: list[object] = [exc]
    for _ in range(50):
        if not pending:
            break
        item = pending.pop(0)
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, socket.gaierror):
            return "unknown host"
        if isinstance(item, TimeoutError):
            return f"no answer within {PROBE_TIMEOUT_S:g} s"
        if isinstance(item, BaseException):
            pending.extend(item.args)
            pending.extend(e for e in (item.__cause__, item.__context__) if e is not None)
            # pika wraps the socket's error in ``exception`` (one attempt) or ``exceptions`` (all).
            pending.append(getattr(item, "exception", None))
            pending.extend(getattr(item, "exceptions", None) or ())
    return str(exc) or type(exc).__name__


def check_database(database_url: str, *, server_only: bool = False) -> str | None:
    """None if PostgreSQL accepts a connection to the database (or, ``server_only``, to the
    server: `dev` creates the database itself); otherwise what is wrong and what to do."""
    url = urlunsplit(urlsplit(database_url)._replace(path="/postgres")) if server_only else database_url
    where = f"{_address(url, 5432)} (DATABASE_URL={redact(database_url)})"

    async def connect() -> None:
        conn = await asyncpg.connect(url, timeout=PROBE_TIMEOUT_S)
        await conn.close()

    try:
        asyncio.run(connect())
    except asyncpg.InvalidCatalogNameError:
        name = urlsplit(url).path.lstrip("/")
        return (
            f'PostgreSQL at {where} has no database "{name}": `make run` creates it; or create it'
            " (createdb) and run `analytics-exports migrate up`"
        )
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        return f"PostgreSQL at {where} refused the login: {exc}; check the user and password in DATABASE_URL"
    except asyncpg.PostgresError as exc:
        return f"PostgreSQL at {where} refused the connection: {exc}"
    except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
        return (
            f"PostgreSQL is not reachable at {where}: {_failure(exc)}. Start it with `make services`"
            " (ops/start-services.sh), or set DATABASE_URL to a server that is running"
        )
    return None


def check_broker(rabbitmq_url: str) -> str | None:
    """None if RabbitMQ accepts an AMQP connection; otherwise what is wrong and what to do."""
    where = f"{_address(rabbitmq_url, 5671 if rabbitmq_url.startswith('amqps') else 5672)}"
    where += f" (RABBITMQ_URL={redact(rabbitmq_url)})"
    params = pika.URLParameters(rabbitmq_url)
    params.socket_timeout = PROBE_TIMEOUT_S
    params.stack_timeout = 2 * PROBE_TIMEOUT_S
    params.connection_attempts = 1
    # pika logs every failed attempt at ERROR, with a traceback: this check says it in one line.
    pika_log = logging.getLogger("pika")
    level = pika_log.level
    pika_log.setLevel(logging.CRITICAL)
    try:
        pika.BlockingConnection(params).close()
    except pika.exceptions.ProbableAuthenticationError:
        return f"RabbitMQ at {where} refused the login; check the user and password in RABBITMQ_URL"
    except pika.exceptions.ProbableAccessDeniedError:
        return f"RabbitMQ at {where} refused access to the virtual host in RABBITMQ_URL"
    except (pika.exceptions.AMQPError, OSError) as exc:
        return (
            f"RabbitMQ is not reachable at {where}: {_failure(exc)}. Start it with `make services`"
            " (ops/start-services.sh), or set RABBITMQ_URL to a broker that is running"
        )
    finally:
        pika_log.setLevel(level)
    return None


def check_rollups(database_url: str, tables: RollupTables) -> str | None:
    """None if the rollup tables have what an export reads; otherwise each thing missing."""
    from service.repository import check_rollup_tables  # only the API and the worker need it

    try:
        found = asyncio.run(check_rollup_tables(database_url, tables))
    except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
        return f"the rollup tables could not be checked: {exc}"
    if not found:
        return None
    return (
        f"the rollup tables cannot serve exports: {'; '.join(found)} (what they must provide:"
        " docs/operations.md#rollup-tables; `migrate up --with-rollups` makes them for a demo)"
    )


def unreachable_service(settings: Settings, command: str) -> str | None:
    """What the command needs, checked once at start; the first problem, or None."""
    if command in ("migrate", "seed-demo", "api", "worker", "dev"):
        problem = check_database(settings.database_url, server_only=command == "dev")
        if problem is not None:
            return problem
    if command in ("api", "worker"):
        problem = check_rollups(settings.database_url, settings.rollup_tables)
        if problem is not None:
            return problem
    if command in ("worker", "scheduler", "dev"):
        problem = check_broker(settings.rabbitmq_url)
        if problem is not None:
            return problem
    if command == "api" and (problem := check_broker(settings.rabbitmq_url)) is not None:
        # By design the API accepts exports while RabbitMQ is down (the sweep publishes them).
        log.warning("%s; accepting exports anyway: the scheduler's sweep publishes them later", problem)
    return None
