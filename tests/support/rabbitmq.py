"""A RabbitMQ virtual host of a test's own whose queues are quorum queues (replicated in a
cluster): declared without `x-queue-type`, as Dramatiq declares them, they take the vhost's
default queue type. Made with the machine's rabbitmqctl."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

RABBITMQCTL_TIMEOUT = 60


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=RABBITMQCTL_TIMEOUT, check=False
    )
    assert result.returncode == 0, f"rabbitmqctl {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


@contextlib.contextmanager
def quorum_vhost(url: str, user: str = "guest") -> Iterator[str]:
    """A new vhost whose default queue type is quorum, for ``user``; yields ``url`` pointed at it,
    and deletes the vhost (its queues with it) afterwards."""
    name = f"exports-quorum-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name, "--default-queue-type", "quorum")
    try:
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield urlunsplit(urlsplit(url)._replace(path="/" + quote(name, safe="")))
    finally:
        rabbitmqctl("delete_vhost", name)


def queue_types(url: str) -> dict[str, str]:
    """Each queue of ``url``'s vhost and its type (classic, quorum, stream)."""
    vhost = urlsplit(url).path.lstrip("/") or "/"
    out = rabbitmqctl("list_queues", "-p", vhost, "name", "type", "--no-table-headers")
    return dict(line.split("\t")[:2] for line in out.splitlines() if "\t" in line)
