"""Local stand-ins for development, tests and benchmarks (never production): a free loopback
port, waiting for an HTTP server to answer, a moto S3 server as a child process, and a
throwaway migrated database."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service.migrations import migrate_up
from service.repository import ensure_database
from service.rollups import DEFAULT_TABLES

#: Ports free_port has handed out in this process.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now and that this process has not been given before: the
    kernel may offer a released port again at once, and a caller that takes several before
    starting the servers that bind them (an API and its worker's metrics port) needs them
    distinct."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def port_in_use(host: str, port: int) -> bool:
    """Whether something already accepts connections on ``host``:``port`` (0.0.0.0: loopback)."""
    try:
        with socket.create_connection(("127.0.0.1" if host in ("0.0.0.0", "") else host, port), timeout=1):  # noqa: S104
            return True
    except OSError:
        return False


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll ``url`` until it answers 2xx; ``False`` if it did not within ``timeout`` seconds, or
    if ``process`` (the server being waited for) exited meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URLs we build)
                if 200 <= response.status < 300:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


def start_moto(port: int) -> subprocess.Popen[bytes]:
    """Start ``moto_server`` (from this interpreter's environment) on 127.0.0.1:``port``."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def moto_server(timeout: float = 30) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A moto S3 server on a free loopback port for the duration: ``(endpoint, process)``."""
    port = free_port()
    proc = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        if not wait_http(endpoint + "/moto-api/", timeout):
            raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout:g} s")
        yield endpoint, proc
    finally:
        stop(proc)


@contextlib.contextmanager
def fresh_database(admin_url: str, prefix: str, *, migrated: bool = True) -> Iterator[str]:
    """A new database ``<prefix>_<hex>`` on the server of ``admin_url``, migrated with the default
    rollup tables (``--with-rollups``) unless not ``migrated`` (then empty), and dropped afterwards
    (even if migrating fails)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = urlunsplit(urlsplit(admin_url)._replace(path="/" + name))

    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    try:
        asyncio.run(ensure_database(url))
        if migrated:
            asyncio.run(migrate_up(url, rollup_tables=DEFAULT_TABLES))
        yield url
    finally:
        asyncio.run(drop())


#: The CORS rule that lets the self-serve page (docs/operations.md: the same rule, with the API's
#: origin, in production) read a download link's bytes to check them: GET from any origin here.
PAGE_DOWNLOADS_CORS: Final = {
    "CORSRules": [
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["*"], "MaxAgeSeconds": 3600}
    ]
}
