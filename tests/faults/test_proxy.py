"""Tests of FaultProxy itself, against a tiny threaded echo server on loopback."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.faults.proxy import FaultProxy

#: How long a read waits for a fault to show up (cut, blackhole) before the test gives up.
WAIT = 1.0


class EchoServer:
    """Echoes every byte back; one thread per connection; counts connections accepted."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # listener closed
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def drop_connections(self) -> None:
        """Close the server side of every open connection (FIN to the peer)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._listener.close()
        self.drop_connections()
        self._accept_thread.join(WAIT)
        for thread in self._threads:
            thread.join(WAIT)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.port) as p:
        yield p


@pytest.fixture
def connect(proxy: FaultProxy) -> Iterator[Callable[[], socket.socket]]:
    """Open client sockets to the proxy; all are closed after the test."""
    opened: list[socket.socket] = []

    def open_one() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT)
        opened.append(sock)
        return sock

    yield open_one
    for sock in opened:
        sock.close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} of {size} bytes")
        buf += chunk
    return bytes(buf)


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendall(payload)
    return recv_exactly(sock, len(payload))


def assert_closed_by_peer(sock: socket.socket) -> None:
    """The connection ends within WAIT: EOF or reset; a timeout or data fails the test."""
    sock.settimeout(WAIT)
    try:
        data = sock.recv(1024)
    except ConnectionResetError:
        return
    assert data == b"", f"expected the connection to be closed, got {data!r}"


def assert_no_answer(sock: socket.socket, payload: bytes = b"anyone?") -> None:
    sock.sendall(payload)
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        sock.recv(1024)


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_forwards_both_ways_and_counts_connections(
    proxy: FaultProxy, connect: Callable[[], socket.socket], echo: EchoServer
) -> None:
    first, second = connect(), connect()
    assert round_trip(first, b"hello") == b"hello"
    assert round_trip(second, b"world" * 1000) == b"world" * 1000
    assert proxy.connections == 2
    assert proxy.total_connections == 2
    assert echo.accepted == 2

    first.close()  # a client close reaches the upstream side and frees the slot
    assert wait_until(lambda: proxy.connections == 1)
    assert proxy.total_connections == 2


def test_upstream_close_closes_the_client(
    proxy: FaultProxy, connect: Callable[[], socket.socket], echo: EchoServer
) -> None:
    client = connect()
    assert round_trip(client) == b"ping"
    echo.drop_connections()
    assert_closed_by_peer(client)
    assert wait_until(lambda: proxy.connections == 0)


def test_cut_resets_open_connections_and_refuses_new_ones(
    proxy: FaultProxy, connect: Callable[[], socket.socket], echo: EchoServer
) -> None:
    client = connect()
    assert round_trip(client) == b"ping"

    proxy.cut()
    assert proxy.connections == 0
    assert_closed_by_peer(client)

    try:
        late = connect()  # the listener still accepts, then resets at once
    except ConnectionResetError:
        pass  # the reset beat connect() back to the caller: refused all the same
    else:
        with contextlib.suppress(ConnectionError):
            late.sendall(b"ping")
        assert_closed_by_peer(late)
    deadline = time.monotonic() + WAIT
    while proxy.total_connections < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.total_connections == 2
    assert echo.accepted == 1, "a cut proxy must not reach the target"


def test_restore_after_cut_forwards_new_connections(
    proxy: FaultProxy, connect: Callable[[], socket.socket]
) -> None:
    old = connect()
    assert round_trip(old) == b"ping"  # accepted by the proxy, not just queued in its backlog
    proxy.cut()
    proxy.restore()
    assert_closed_by_peer(old)  # connections closed by cut stay closed
    assert round_trip(connect(), b"back") == b"back"
    assert proxy.connections == 1


def test_blackhole_swallows_requests_and_restore_resets_them(
    proxy: FaultProxy, connect: Callable[[], socket.socket], echo: EchoServer
) -> None:
    existing = connect()
    assert round_trip(existing) == b"ping"

    proxy.blackhole()
    assert_no_answer(existing)
    fresh = connect()  # connecting succeeds, nothing answers
    assert_no_answer(fresh)
    assert proxy.connections == 2
    assert echo.accepted == 1, "a blackholed connection must not reach the target"

    proxy.restore()
    assert_closed_by_peer(existing)  # documented: blackholed connections are reset, not resumed
    assert_closed_by_peer(fresh)
    assert round_trip(connect(), b"again") == b"again"


def test_hold_stalls_the_connection_that_sends_the_marker_until_release(
    proxy: FaultProxy, connect: Callable[[], socket.socket]
) -> None:
    held, other = connect(), connect()
    proxy.hold(b".manifest")
    # A request without the marker goes through; one with it gets no answer, nor does its sequel
    assert round_trip(held, b"PUT /data HTTP/1.1") == b"PUT /data HTTP/1.1"
    assert_no_answer(held, b"PUT /x.manifest HTTP/1.1")
    assert_no_answer(held, b"GET /data HTTP/1.1")
    assert wait_until(lambda: proxy.held == 1)
    # Other connections are not held
    assert round_trip(other) == b"ping"
    proxy.release()
    assert_closed_by_peer(held)
    assert round_trip(connect(), b"PUT /y.manifest") == b"PUT /y.manifest"  # no longer held
    assert proxy.held == 1


def test_delay_slows_every_round_trip(proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
    client = connect()
    assert round_trip(client) == b"ping"
    proxy.set_delay(0.3)
    started = time.monotonic()
    assert round_trip(client) == b"ping"
    assert time.monotonic() - started >= 0.3


def test_rate_limits_throughput(proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
    payload = bytes(range(256)) * 800  # 200 KiB
    proxy.set_rate(100 * 1024)
    client = connect()
    client.settimeout(10)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            client.sendall(payload)
        except BaseException as exc:
            errors.append(exc)

    started = time.monotonic()
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    echoed = recv_exactly(client, len(payload))
    elapsed = time.monotonic() - started
    sender.join(WAIT)
    assert not errors
    assert echoed == payload
    assert elapsed >= 1.5, f"200 KiB at 100 KiB/s went through in {elapsed:.2f} s"


def test_stop_closes_connections(echo: EchoServer) -> None:
    proxy = FaultProxy("127.0.0.1", echo.port).start()
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT)
    with client:
        assert round_trip(client) == b"ping"
        proxy.stop()
        assert_closed_by_peer(client)
    proxy.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT).close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:5432/db", "postgresql://postgres@127.0.0.1:{port}/db"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "amqp://guest:guest@127.0.0.1:{port}/%2F"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:{port}"),
        (
            "postgresql://u:p@localhost:5432/db?sslmode=disable",
            "postgresql://u:p@127.0.0.1:{port}/db?sslmode=disable",
        ),
    ],
)
def test_url_for_points_urls_at_the_proxy(proxy: FaultProxy, url: str, expected: str) -> None:
    assert proxy.port not in (5432, 5672, 9000)
    assert proxy.url_for(url) == expected.format(port=proxy.port)
