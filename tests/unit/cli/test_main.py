"""A command whose database or broker is unreachable says so in one line and exits 1.

The processes run as from a shell, pointed at closed loopback ports: no service is needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.preflight import check_broker, check_database, redact
from devtools.local import free_port

BIN = Path(sys.executable).parent
SECRET = "cli-startup-secret-9fQ2xL7wK4pZ8mN3vB6t"


@pytest.fixture(scope="module")
def closed() -> dict[str, str]:
    """An environment whose PostgreSQL and RabbitMQ are closed ports, with passwords in the URLs."""
    pg, amqp = free_port(), free_port()
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "RABBITMQ_", "S3_"))},
        "DATABASE_URL": f"postgresql://exports:pg-secret@127.0.0.1:{pg}/analytics",
        "RABBITMQ_URL": f"amqp://guest:mq-secret@127.0.0.1:{amqp}/%2F",
        "HTTP_PORT": str(free_port()),
        "AUTH_JWT_SECRET": SECRET,
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "analytics-exports"), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "command", [["migrate", "up"], ["migrate", "down"], ["api"], ["worker"], ["seed-demo"]]
)
def test_an_unreachable_database_is_one_line_naming_it_and_how_to_start_it(
    closed: dict[str, str], command: list[str]
) -> None:
    # Given nothing listens where DATABASE_URL points
    port = closed["DATABASE_URL"].split(":")[3].split("/")[0]
    # When the command starts
    result = run(closed, *command)
    # Then it stops at once with one line: which service, where (no password), what to do
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"analytics-exports {command[0]}: PostgreSQL is not reachable at 127.0.0.1:{port}"
        f" (DATABASE_URL=postgresql://exports:***@127.0.0.1:{port}/analytics): connection refused."
        " Start it with `make services` (ops/start-services.sh), or set DATABASE_URL to a server"
        " that is running\n"
    )
    assert result.stdout == ""


def test_make_run_says_in_one_line_that_the_database_is_unreachable(closed: dict[str, str]) -> None:
    # `make run` is `python -m devtools`: the same check, the same one line, in its own name
    result = subprocess.run(
        [str(BIN / "python"), "-m", "devtools"], env=closed, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("make run: PostgreSQL is not reachable at 127.0.0.1:")
    assert len(result.stderr.splitlines()) == 1
    assert "pg-secret" not in result.stderr


def test_an_unreachable_broker_stops_the_scheduler_with_one_line(closed: dict[str, str]) -> None:
    port = closed["RABBITMQ_URL"].split(":")[3].split("/")[0]
    result = run(closed, "scheduler")
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"analytics-exports scheduler: RabbitMQ is not reachable at 127.0.0.1:{port}"
        f" (RABBITMQ_URL=amqp://guest:***@127.0.0.1:{port}/%2F): connection refused."
        " Start it with `make services` (ops/start-services.sh), or set RABBITMQ_URL to a broker"
        " that is running\n"
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_commands_that_need_no_service_do_not_check_any(closed: dict[str, str]) -> None:
    result = run(closed, "token", "--org", "5f0c6d3e-2b1a-4c8e-9f3d-7a6b5c4d3e21", "--sub", "me")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2  # a JWT


def test_the_checks_pass_nothing_when_they_fail_and_name_a_missing_host() -> None:
    assert "unknown host" in (check_database("postgresql://u@no-such-host.invalid:5432/x") or "")
    assert "connection refused" in (check_broker(f"amqp://u:p@127.0.0.1:{free_port()}/%2F") or "")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://postgres@127.0.0.1:5432/analytics", "postgresql://postgres@127.0.0.1:5432/analytics"),
        ("postgresql://u:p%40ss@db:5432/a", "postgresql://u:***@db:5432/a"),
        (
            "postgresql://u@db/a?password=hunter2&sslmode=require",
            "postgresql://u@db/a?password=***&sslmode=require",
        ),
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "amqp://guest:***@127.0.0.1:5672/%2F"),
    ],
)
def test_urls_are_shown_without_their_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        (None, "is required by the API"),
        ("analytics-exports-dev-secret-change-me-in-production", "published example secret"),
        ("change-me-to-a-random-secret-of-32-bytes-or-more", "published example secret"),
        ("too-short-to-sign", "shorter than 32 bytes"),
    ],
)
def test_the_api_will_not_start_without_a_secret_of_its_own(
    closed: dict[str, str], secret: str | None, why: str
) -> None:
    # Given AUTH_JWT_SECRET unset (as in the image's defaults), or set to a value anyone can read
    env = {k: v for k, v in closed.items() if k != "AUTH_JWT_SECRET"}
    if secret is not None:
        env["AUTH_JWT_SECRET"] = secret
    # When the API starts (on 0.0.0.0, as in the container)
    result = run({**env, "HTTP_HOST": "0.0.0.0"}, "api")  # noqa: S104 (never binds: it exits first)
    # Then it exits 2 before listening, with one line naming the variable and how to make one
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "AUTH_JWT_SECRET" in result.stderr
    assert why in result.stderr
    assert "openssl rand" in result.stderr
    if secret is not None:
        assert secret not in result.stderr


def test_minting_a_token_needs_the_secret(closed: dict[str, str]) -> None:
    env = {k: v for k, v in closed.items() if k != "AUTH_JWT_SECRET"}
    result = run(env, "token", "--org", "5f0c6d3e-2b1a-4c8e-9f3d-7a6b5c4d3e21", "--sub", "me")
    assert result.returncode == 2
    assert "AUTH_JWT_SECRET: is required to sign tokens" in result.stderr
    assert result.stdout == ""
