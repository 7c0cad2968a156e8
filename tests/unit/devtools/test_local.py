"""Ports for local servers: distinct within a process, though the kernel may offer one again."""

from __future__ import annotations

import socket

from devtools.local import free_port


def test_ports_handed_out_are_distinct_and_free() -> None:
    ports = [free_port() for _ in range(1000)]  # plain bind(0) repeats a few in a thousand
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # free indeed
