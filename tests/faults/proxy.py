"""A small TCP fault-injection proxy for tests.

`FaultProxy` listens on 127.0.0.1 (a free port) and forwards every connection to a target
(host, port). An asyncio event loop runs in a background daemon thread; the public API is
synchronous and thread-safe, so it can be driven from plain pytest tests and sync fixtures:

    with FaultProxy("127.0.0.1", 5432) as proxy:
        dsn = proxy.url_for("postgresql://postgres@127.0.0.1:5432/db")
        ...
        proxy.cut()        # the service is unreachable: connections are reset
        proxy.restore()

Fault modes (each state change has taken effect when the call returns):

- ``cut()``: every open connection is reset (RST to both client and upstream) and every new
  incoming connection is accepted and reset at once, without contacting the target.
- ``blackhole()``: a network partition. New connections are accepted but never connected to
  the target; on existing connections bytes are read and dropped in both directions. A close by
  the target is not passed on to the client (a close by the client still tears the connection
  down).
- ``restore()``: new connections are forwarded normally again. Connections still open from a
  blackhole are *reset*, not resumed (they may have lost bytes mid-stream, so resuming them
  would hand a client a corrupt stream). Connections reset by ``cut()`` stay closed.
- ``set_delay(seconds)`` / ``set_rate(bytes_per_second)``: slow forwarding down, per chunk and
  per direction; these apply to open connections from their next chunk and combine with the
  modes above.
- ``hold(marker)``: a client chunk that contains ``marker`` (a path in an HTTP request line, say)
  is not forwarded, and nothing more is on its connection: the client waits for an answer that
  does not come. ``held`` counts such connections; ``release()`` resets them.

When either side of a forwarded connection closes (or fails), the other side is closed too:
half-closes are not propagated.

A client's connect() can return before the proxy's loop has accepted the connection (it waits
in the listen backlog); such a connection gets the mode in force when it is accepted, so a test
that needs "connected before the fault" should complete a round trip first. `connections`
and `total_connections` are updated in the loop thread, so poll them after a client closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = ["FaultProxy"]

_T = TypeVar("_T")
_Mode = Literal["forward", "cut", "blackhole"]

#: Largest chunk copied in one go.
CHUNK_SIZE = 64 * 1024
#: How long a synchronous call waits for the proxy's event loop before giving up.
_CALL_TIMEOUT = 5.0
_LISTEN_HOST = "127.0.0.1"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection at once with an RST (SO_LINGER 0), dropping anything unsent."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # also fine on a transport that is already closing or closed


class _Connection:
    """One client connection and, when forwarded, its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, *, blackholed: bool) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.blackholed = blackholed
        self.closed = False
        self.held = False
        #: The task that owns this connection (set once it is running).
        self.task: asyncio.Task[None] | None = None

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


class FaultProxy:
    """TCP proxy on 127.0.0.1 that can cut, blackhole, delay and throttle traffic to a target.

    A proxy is started once (`start()` or ``with``) and stopped once (`stop()`); the listening
    port is chosen by the OS and available as `port` after `start()`.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        # Guards start/stop and serialises calls into the loop; never taken in the loop thread.
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._started = False
        self._stopped = False
        # Everything below is only touched in the loop thread once started.
        self._mode: _Mode = "forward"
        self._delay = 0.0
        self._rate: int | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._total_connections = 0
        self._hold: bytes | None = None
        self._held = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start listening; blocks until the server accepts connections. Returns self."""
        with self._lock:
            if self._started:
                raise RuntimeError("FaultProxy can only be started once")
            self._started = True
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=self._run_loop, args=(loop,), name=f"FaultProxy->{self.target_port}", daemon=True
            )
            self._loop, self._thread = loop, thread
            thread.start()
            try:
                asyncio.run_coroutine_threadsafe(self._listen(), loop).result(_CALL_TIMEOUT)
            except BaseException:
                self._stop_loop()
                raise
        return self

    def stop(self) -> None:
        """Reset every connection, stop listening and join the thread. Idempotent."""
        with self._lock:
            if self._loop is None or self._stopped:
                return
            self._stopped = True
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(_CALL_TIMEOUT)
            finally:
                self._stop_loop()

    def __enter__(self) -> FaultProxy:
        return self if self._started else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the proxy listens on (127.0.0.1)."""
        if self._port is None:
            raise RuntimeError("FaultProxy is not started")
        return self._port

    @property
    def host(self) -> str:
        return _LISTEN_HOST

    @property
    def connections(self) -> int:
        """Client connections currently open through the proxy (blackholed ones included)."""
        return len(self._connections)

    @property
    def total_connections(self) -> int:
        """Client connections accepted since start (including those reset by `cut`)."""
        return self._total_connections

    def url_for(self, url: str) -> str:
        """Rewrite host:port of `url` to the proxy's; scheme, user, password, path and query stay."""
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"URL has no host: {url!r}")
        userinfo, at, _hostport = parts.netloc.rpartition("@")
        netloc = f"{userinfo}{at}{_LISTEN_HOST}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # -- faults ----------------------------------------------------------------------------

    def cut(self) -> None:
        """Reset all open connections now and reset every new one until `restore()`."""

        def apply() -> None:
            self._mode = "cut"
            for conn in list(self._connections):
                self._close(conn)

        self._call(apply)

    def blackhole(self) -> None:
        """Accept connections but forward nothing (bytes are dropped) until `restore()`."""

        def apply() -> None:
            self._mode = "blackhole"
            for conn in self._connections:
                conn.blackholed = True

        self._call(apply)

    def restore(self) -> None:
        """Forward new connections normally again; connections left from a blackhole are reset."""

        def apply() -> None:
            self._mode = "forward"
            for conn in [c for c in self._connections if c.blackholed]:
                self._close(conn)

        self._call(apply)

    def set_delay(self, seconds: float) -> None:
        """Sleep `seconds` before forwarding each chunk, in both directions; 0 disables."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")

        def apply() -> None:
            self._delay = float(seconds)

        self._call(apply)

    def set_rate(self, bytes_per_second: int | None) -> None:
        """Throttle each direction of each connection to about `bytes_per_second`; None disables."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("rate must be > 0 or None")

        def apply() -> None:
            self._rate = bytes_per_second

        self._call(apply)

    def hold(self, marker: bytes) -> None:
        """Stall every connection whose client sends ``marker``, from that chunk on."""

        def apply() -> None:
            self._hold = marker

        self._call(apply)

    def release(self) -> None:
        """Stop holding, and reset the connections that were held."""

        def apply() -> None:
            self._hold = None
            for conn in [c for c in self._connections if c.held]:
                self._close(conn)

        self._call(apply)

    @property
    def held(self) -> int:
        """Connections held so far (since the proxy started)."""
        return self._call(lambda: self._held)

    # -- thread plumbing -------------------------------------------------------------------

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run `fn` in the loop thread and wait for it (directly if the loop is not running)."""
        with self._lock:
            loop = self._loop
            if loop is None or self._stopped:
                return fn()
            future: concurrent.futures.Future[_T] = concurrent.futures.Future()

            def run() -> None:
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

            loop.call_soon_threadsafe(run)
            return future.result(_CALL_TIMEOUT)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _stop_loop(self) -> None:
        assert self._loop is not None
        assert self._thread is not None
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CALL_TIMEOUT)

    # -- in the loop thread ----------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, _LISTEN_HOST, 0)
        self._port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            self._close(conn)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        # Let aborted transports run their connection_lost callbacks before the loop stops.
        for _ in range(3):
            await asyncio.sleep(0)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback (not a coroutine) so that asyncio does not own the handler task:
        # we create, track and cancel it ourselves.
        self._total_connections += 1
        if self._mode == "cut":
            _reset(writer)
            return
        conn = _Connection(writer, blackholed=self._mode == "blackhole")
        self._connections.add(conn)
        task = asyncio.get_running_loop().create_task(self._handle(conn, reader))
        conn.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close(self, conn: _Connection) -> None:
        """Reset both sides of `conn` and cancel its task; it no longer counts as open."""
        if conn.closed:
            return
        conn.closed = True
        self._connections.discard(conn)
        for writer in conn.writers():
            _reset(writer)
        if conn.task is not None and conn.task is not asyncio.current_task():
            conn.task.cancel()

    async def _handle(self, conn: _Connection, client_reader: asyncio.StreamReader) -> None:
        pumps: list[asyncio.Task[None]] = []
        try:
            if conn.blackholed:
                # Partitioned from the start: never contact the target, swallow what comes in.
                await self._pump(conn, client_reader, None, from_client=True)
                return
            try:
                upstream_reader, conn.upstream = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                return  # the target refused: the client sees the connection close
            loop = asyncio.get_running_loop()
            pumps = [
                loop.create_task(self._pump(conn, client_reader, conn.upstream, from_client=True)),
                loop.create_task(self._pump(conn, upstream_reader, conn.client, from_client=False)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            if pumps:
                await asyncio.gather(*pumps, return_exceptions=True)
            if not conn.closed:
                conn.closed = True
                self._connections.discard(conn)
                await self._close_gracefully(conn.writers())

    @staticmethod
    async def _close_gracefully(writers: list[asyncio.StreamWriter]) -> None:
        """Flush what was already forwarded, then FIN; reset instead if cancelled (stop())."""
        for writer in writers:
            writer.close()
        try:
            for writer in writers:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except asyncio.CancelledError:
            for writer in writers:
                _reset(writer)
            raise

    async def _pump(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        *,
        from_client: bool,
    ) -> None:
        """Copy reader -> writer chunk by chunk, applying blackhole, delay and rate."""
        while True:
            rate = self._rate
            # With a rate, read smaller chunks so that each sleep is ~0.1 s and a change applies soon.
            size = CHUNK_SIZE if rate is None else max(1, min(CHUNK_SIZE, rate // 10))
            try:
                data = await reader.read(size)
            except OSError:
                data = b""
            if not data:
                if conn.blackholed and not from_client:
                    # A partitioned client must not learn that the target went away.
                    await asyncio.Event().wait()  # until the connection is closed (cancelled)
                return
            if conn.blackholed or writer is None:
                continue
            if from_client and self._hold is not None and self._hold in data:
                conn.held = True
                self._held += 1
                await asyncio.Event().wait()  # until release() or stop() closes the connection
            if self._delay > 0:
                await asyncio.sleep(self._delay)
            if self._rate is not None:
                await asyncio.sleep(len(data) / self._rate)
            if conn.blackholed:
                continue
            try:
                writer.write(data)
                await writer.drain()
            except OSError:
                return
