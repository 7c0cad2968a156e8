"""`make run` is `python -m devtools`: start it as a user would, follow what it prints, stop it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from devtools.local import free_port, port_in_use
from tests.conftest import (
    ADMIN_DATABASE_URL,
    BIN,
    RABBITMQ_URL,
    delete_queues,
)
from tests.e2e.test_walkthrough import run_walkthrough


def test_dev_starts_everything_prints_a_working_walkthrough_and_stops_cleanly(tmp_path: Path) -> None:
    # Given a fresh database name, free ports and a queue of its own (nothing else set: embedded defaults)
    name = f"analytics_dev_{uuid.uuid4().hex[:8]}"
    queue = f"exports-dev-{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("S3_", "EXPORT_", "AUTH_"))},
        "DATABASE_URL": urlunsplit(urlsplit(ADMIN_DATABASE_URL)._replace(path="/" + name)),
        "RABBITMQ_URL": RABBITMQ_URL,
        "EXPORT_QUEUE": queue,
        "HTTP_PORT": str(free_port()),
        "DEV_S3_PORT": str(free_port()),
    }
    log = (tmp_path / "dev.log").open("w+")
    proc = subprocess.Popen(
        [str(BIN / "python"), "-m", "devtools"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    try:
        # When it is up, it prints the three variables the walkthrough needs
        deadline = time.monotonic() + 60
        printed: dict[str, str] = {}
        while len(printed) < 3:
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.2)
            printed = dict(
                re.findall(r"^\s*export (TOKEN|ORG|API)=(\S+)$", (tmp_path / "dev.log").read_text(), re.M)
            )
        output = (tmp_path / "dev.log").read_text()
        assert "JOB=$(curl" in output  # the walkthrough itself is printed too
        # and where the RabbitMQ console is (`make services` enables it where it is installed)
        console = "http://127.0.0.1:15672" if port_in_use("127.0.0.1", 15672) else "off"
        assert f"RabbitMQ console: {console}" in output, output

        # and the page's sign-in link, its fragment (never sent to the server) the same token
        [link] = re.findall(r"^\s*(http://\S+/analytics/#token=\S+)$", output, re.M)
        assert link == f"{printed['API']}/analytics/#token={printed['TOKEN']}"
        with urllib.request.urlopen(link.split("#")[0], timeout=10) as page:  # noqa: S310 (loopback)
            assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
            assert b'<script type="module"' in page.read()

        # Then the README walkthrough works against it, verbatim
        run_walkthrough({**env, **printed}, tmp_path)

        # And so does the `analytics-exports export` line it prints, pasted into a shell
        commands = re.findall(r"^\s*(\S*analytics-exports export .*)$", output, re.M)
        assert len(commands) == 1, output
        (tmp_path / "cli").mkdir()
        pasted = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", commands[0]],
            env={**env, **printed},
            cwd=tmp_path / "cli",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pasted.returncode == 0, pasted.stdout + pasted.stderr
        assert "SHA-256 matches the API's checksum" in pasted.stdout
        assert (tmp_path / "cli" / "export.csv").stat().st_size > 0
    finally:
        # And Ctrl-C stops every child cleanly
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
            delete_queues(queue)
            asyncio.run(drop(name))
    assert code == 0, (tmp_path / "dev.log").read_text()[-3000:]


@pytest.mark.parametrize(
    ("variable", "names"), [("DEV_S3_PORT", "the local S3 stand-in"), ("HTTP_PORT", "port")]
)
def test_dev_says_in_one_line_which_port_is_taken_and_what_to_do(variable: str, names: str) -> None:
    # Given another program already listens on the port `make run` would use
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("S3_", "EXPORT_", "AUTH_"))},
            "DATABASE_URL": urlunsplit(urlsplit(ADMIN_DATABASE_URL)._replace(path="/analytics_dev_unused")),
            "RABBITMQ_URL": RABBITMQ_URL,
            "HTTP_PORT": str(free_port()),
            "DEV_S3_PORT": str(free_port()),
            variable: str(port),
        }
        # When `make run` starts
        result = subprocess.run(
            [str(BIN / "python"), "-m", "devtools"], env=env, capture_output=True, text=True, timeout=60
        )
    # Then it stops with one line naming the port and the variable that moves it, and no traceback
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"make run: {names}"), result.stderr
    assert f"port {port} is already in use" in last
    assert f"set {variable} to a free port" in last
    assert "Traceback" not in result.stdout + result.stderr


async def drop(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DATABASE_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
