"""A TCP proxy on 127.0.0.1 that a test can cut, blackhole, slow down or refuse.

Put it between a client and the broker to inject network faults::

    proxy = TcpProxy(broker.host, broker.port)       # mode "pass"
    client.connect(proxy.host, proxy.port)
    proxy.cut()         # RST every current connection; new ones still accepted
    proxy.blackhole()   # swallow all bytes both ways; connections stay open
    proxy.refuse()      # reset every new connection right after accept
    proxy.restore()     # back to "pass" (and reset connections a blackhole poisoned)
    proxy.delay = 0.05  # add 50 ms each way (100 ms RTT), order preserved
    proxy.rate = 125_000  # bytes/s each way (1 Mbit/s), 0 = unlimited
    proxy.bytes_up, proxy.bytes_down   # bytes forwarded client->target, target->client
    proxy.capture_up = bytearray()      # also keep every client->target byte (None: don't)
    proxy.close()

Semantics worth knowing:

* `blackhole()` is a silent, half-open link: bytes in both directions are read
  and discarded, and neither side learns when the other side closes. The
  client can only notice through its own keepalive. Connections accepted while
  blackholed are not forwarded upstream at all.
* Bytes lost in a blackhole leave an MQTT stream unusable, so `restore()`
  resets (RST) every connection that lost bytes (or a close) to the blackhole
  — like a NAT entry that expired. A connection that stayed idle throughout
  carries on. Connections made after `restore()` work normally.
* `refuse()` affects only new connections; combine with `cut()` for "the
  broker became unreachable".
* Latency is applied per direction with a queue of (deadline, bytes): each
  chunk is written `delay` seconds after it was read, so throughput is not
  serialised by the delay (a window of messages is in flight at once).
* A `rate` (bytes/s per direction) serialises each direction like a link
  of that bandwidth: a chunk leaves `len/rate` seconds after the previous
  one finished, then travels `delay`.

Everything runs on one asyncio event loop in one daemon thread, which ends on
`close()`. Control methods return once the change is in effect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from typing import Literal, Protocol, Self, TypeVar

__all__ = ["Endpoint", "ProxyFactory", "ProxyMode", "TcpProxy"]

ProxyMode = Literal["pass", "blackhole", "refuse"]

_HOST = "127.0.0.1"
# Stop reading from a sender while this many bytes wait in its delay queue.
_QUEUE_HIGH_WATER = 4 * 1024 * 1024
_QUEUE_LOW_WATER = 1024 * 1024
_T = TypeVar("_T")


class Endpoint(Protocol):
    """Anything with a `host` and a `port`, such as a `MosquittoBroker`."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


class ProxyFactory(Protocol):
    """Signature of the `proxy_factory` fixture: a proxy in front of `target`."""

    def __call__(self, target: Endpoint | tuple[str, int], *, delay: float = 0.0) -> TcpProxy:
        """Start a proxy to `target` (a broker, or a (host, port) pair); closed at test end."""
        ...


def _reset(transport: asyncio.Transport | None) -> None:
    """Close with SO_LINGER 0 so the peer gets a RST instead of a FIN."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed by the peer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Side(asyncio.Protocol):
    """One TCP connection of a link (the client's, or ours to the target)."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self is self.link.client:
            self.link.proxy.admit(self.link)

    def data_received(self, data: bytes) -> None:
        self.link.forward(self, data)

    def eof_received(self) -> bool:
        self.link.forward_eof(self)
        return True  # we close it ourselves once the queued bytes are out

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.side_lost(self, exc)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Direction:
    """Bytes from `src` to `dst`, each chunk released `delay` seconds after arrival."""

    def __init__(self, proxy: TcpProxy, src: _Side, dst: _Side) -> None:
        self.proxy = proxy
        self.src = src
        self.dst = dst
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued_bytes = 0
        self.last_deadline = 0.0
        self.link_free_at = 0.0  # when the shaped link has sent everything queued so far
        self.timer: asyncio.TimerHandle | None = None
        self.src_paused = False

    def push(self, data: bytes | None) -> None:
        loop = self.proxy.loop
        sent_at = loop.time()
        if self.proxy.rate > 0 and data:
            self.link_free_at = max(sent_at, self.link_free_at) + len(data) / self.proxy.rate
            sent_at = self.link_free_at
        deadline = max(sent_at + self.proxy.delay, self.last_deadline)
        self.last_deadline = deadline
        self.queue.append((deadline, data))
        self.queued_bytes += len(data or b"")
        if self.queued_bytes > _QUEUE_HIGH_WATER and self.src.transport is not None:
            self.src.transport.pause_reading()
            self.src_paused = True
        self.release()

    def release(self) -> None:
        """Write every chunk whose deadline has passed; re-arm the timer for the rest."""
        self.timer = None
        now = self.proxy.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            self.queued_bytes -= len(data or b"")
            self._write(data)
        if self.src_paused and self.queued_bytes < _QUEUE_LOW_WATER:
            self.src_paused = False
            if self.src.transport is not None and not self.src.transport.is_closing():
                self.src.transport.resume_reading()
        if self.queue:
            self.timer = self.proxy.loop.call_at(self.queue[0][0], self.release)

    def cancel(self) -> None:
        self.queue.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _write(self, data: bytes | None) -> None:
        transport = self.dst.transport
        if transport is None or transport.is_closing():
            return
        if data is None:
            # The sender closed: close the receiver once our buffered bytes are out.
            transport.close()
            if self.src.transport is not None:
                self.src.transport.close()
        else:
            transport.write(data)


class _Link:
    """A client connection and its upstream connection, forwarded both ways."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self)
        self.upstream: _Side | None = None
        self.directions: dict[_Side, _Direction] = {}
        # Set once bytes were swallowed (or the link began in a blackhole):
        # the MQTT stream is broken for good, and restore() resets the link.
        self.poisoned = False
        self.closed = False

    def attach_upstream(self, upstream: _Side) -> None:
        self.upstream = upstream
        self.client.peer = upstream
        upstream.peer = self.client
        self.directions[self.client] = _Direction(self.proxy, self.client, upstream)
        self.directions[upstream] = _Direction(self.proxy, upstream, self.client)

    def forward(self, side: _Side, data: bytes) -> None:
        if self.proxy.mode == "blackhole" or self.poisoned or side not in self.directions:
            self.poisoned = True
            return
        if side is self.client:
            self.proxy.bytes_up += len(data)
            if self.proxy.capture_up is not None:
                self.proxy.capture_up += data
        else:
            self.proxy.bytes_down += len(data)
        self.directions[side].push(data)

    def forward_eof(self, side: _Side) -> None:
        if self.proxy.mode == "blackhole" or self.poisoned or side not in self.directions:
            # A blackhole hides a close from the other side.
            self.poisoned = True
            return
        self.directions[side].push(None)

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        if self.closed:
            return
        if self.proxy.mode == "blackhole" or self.poisoned:
            self.poisoned = True
            if self._all_sides_gone():
                self._forget()
            return
        if exc is not None:
            self.reset()
            return
        direction = self.directions.get(side)
        if direction is None:
            self.reset()
        else:
            direction.push(None)
        if self._all_sides_gone():
            self._forget()

    def reset(self) -> None:
        """RST both connections at once; queued bytes are dropped."""
        self.closed = True
        for direction in self.directions.values():
            direction.cancel()
        _reset(self.client.transport)
        if self.upstream is not None:
            _reset(self.upstream.transport)
        self._forget()

    def _all_sides_gone(self) -> bool:
        sides = [self.client] if self.upstream is None else [self.client, self.upstream]
        return all(s.transport is None or s.transport.is_closing() for s in sides)

    def _forget(self) -> None:
        self.closed = True
        for direction in self.directions.values():
            direction.cancel()
        self.proxy.links.discard(self)


class TcpProxy:
    """A fault-injecting TCP forwarder from 127.0.0.1:`port` to the target.

    `delay` seconds are added in each direction (RTT grows by 2 × delay); `rate`
    (bytes/s, 0 = unlimited) caps each direction's bandwidth.
    See the module docstring for the exact semantics of each mode.
    """

    host = _HOST

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay: float = 0.0,
        rate: float = 0.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay = delay
        self.rate = rate
        self.connect_timeout = connect_timeout
        self.mode: ProxyMode = "pass"
        self.links: set[_Link] = set()
        # Bytes forwarded (what a metered link would bill), updated on the proxy's loop.
        self.bytes_up = 0
        self.bytes_down = 0
        self.capture_up: bytearray | None = None
        self._accepted = 0
        self._counted = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="TcpProxy", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result()
        sockets = self._server.sockets
        self.port: int = sockets[0].getsockname()[1]
        self._thread.name = f"TcpProxy-{self.port}"
        self._closed = False

    # ------------------------------------------------------------- counters

    @property
    def accepted(self) -> int:
        """Connections accepted so far (including refused and blackholed ones)."""
        return self._accepted

    @property
    def active(self) -> int:
        """Connections currently open through the proxy."""
        return self._call(lambda: len(self.links))

    def wait_accepted(self, count: int, timeout: float) -> None:
        """Block until `accepted >= count`; raise `TimeoutError` after `timeout` seconds."""
        with self._counted:
            if not self._counted.wait_for(lambda: self._accepted >= count, timeout):
                raise TimeoutError(
                    f"proxy accepted {self._accepted} connections, expected {count} "
                    f"within {timeout} s"
                )

    # --------------------------------------------------------------- faults

    def cut(self) -> int:
        """Reset (RST) every current connection; return how many were cut."""

        def cut_all() -> int:
            links = list(self.links)
            for link in links:
                link.reset()
            return len(links)

        return self._call(cut_all)

    def blackhole(self) -> None:
        """Silently swallow all traffic, keeping every connection open."""
        self._call(lambda: self._set_mode("blackhole"))

    def refuse(self) -> None:
        """Reset new connections right after accepting them (existing ones unaffected)."""
        self._call(lambda: self._set_mode("refuse"))

    def restore(self) -> None:
        """Forward normally again; reset the connections a blackhole poisoned."""

        def restore_pass() -> None:
            self._set_mode("pass")
            for link in [link for link in self.links if link.poisoned]:
                link.reset()

        self._call(restore_pass)

    # ------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop listening, reset every connection and end the proxy's thread."""
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"TcpProxy({self.host}:{self.port} -> {self.target_host}:{self.target_port}, "
            f"mode={self.mode}, delay={self.delay})"
        )

    # -------------------------------------------------------- event loop side

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run `fn` on the proxy's loop and return its result."""
        if self._closed:
            raise RuntimeError("proxy is closed")

        async def run() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result()

    def _set_mode(self, mode: ProxyMode) -> None:
        self.mode = mode

    async def _listen(self) -> asyncio.Server:
        return await self.loop.create_server(self._new_client, _HOST, 0)

    def _new_client(self) -> _Side:
        link = _Link(self)
        with self._counted:
            self._accepted += 1
            self._counted.notify_all()
        return link.client

    def admit(self, link: _Link) -> None:
        """Decide what happens to a freshly accepted connection (before any data)."""
        transport = link.client.transport
        if transport is None or transport.is_closing():
            return
        if self.mode == "refuse":
            _reset(transport)
            return
        self.links.add(link)
        if self.mode == "blackhole":
            link.poisoned = True
            return
        transport.pause_reading()
        self.loop.create_task(self._connect_upstream(link))

    async def _connect_upstream(self, link: _Link) -> None:
        upstream = _Side(link)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: upstream, self.target_host, self.target_port),
                self.connect_timeout,
            )
        except (OSError, TimeoutError):
            # Target down: the client sees its connection reset, like a refused connect.
            link.reset()
            return
        link.attach_upstream(upstream)
        client = link.client.transport
        if link.closed or client is None or client.is_closing():
            _reset(upstream.transport)
            link.reset()
            return
        if link.poisoned or self.mode == "blackhole":
            link.poisoned = True
        client.resume_reading()

    async def _shutdown(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        for link in list(self.links):
            link.reset()
        # Let the aborted transports run connection_lost before the loop stops.
        for _ in range(3):
            await asyncio.sleep(0)
