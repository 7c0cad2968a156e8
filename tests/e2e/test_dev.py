"""`make run` is `analytics-exports dev`: start it as a user would, follow what it prints, stop it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from actors.localdev import free_port
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
        [str(BIN / "analytics-exports"), "dev"], env=env, stdout=log, stderr=subprocess.STDOUT
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

        # Then the README walkthrough works against it, verbatim
        run_walkthrough({**env, **printed}, tmp_path)
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


async def drop(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DATABASE_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
