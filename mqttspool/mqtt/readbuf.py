"""Buffered reads for paho's socket: one ``recv()`` per burst, not three per packet.

paho reads a packet's fixed header a byte at a time (the command byte, then
each byte of the remaining length) and then the body: three ``recv()``
system calls for every 4-byte PUBACK, thirty for a round of ten readings.
:class:`BufferedSocket` wraps the connected socket; its ``recv(n)`` reads up
to :data:`READ_CHUNK` bytes from the kernel when its buffer is empty and hands
them out as paho asks.

Bytes in the buffer are invisible to ``select()``, so the wrapper reports
them through ``pending()`` -- the hook paho already honours for TLS sockets
(whose own buffer ``select()`` cannot see either): while ``pending()`` is
above zero, paho's loop reads again without waiting.
"""

from __future__ import annotations

from typing import Any

READ_CHUNK = 65536


class BufferedSocket:
    """A connected (TCP or TLS) socket with a read buffer; everything else is the
    socket's own (``send``, ``fileno``, ``setblocking``, ``close``...)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.send = sock.send  # the hot path, without __getattr__
        self._buf = b""
        self._pos = 0
        self._inner_pending = getattr(sock, "pending", None)  # a TLS socket's own buffer

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes: from the buffer, else one read of up to READ_CHUNK
        (the socket's errors -- BlockingIOError, TLS want-read -- pass through)."""
        buffered = len(self._buf) - self._pos
        if buffered <= 0:
            data: bytes = self.sock.recv(max(bufsize, READ_CHUNK))
            if len(data) <= bufsize:
                return data  # all of it (b"" at end of stream)
            self._buf, self._pos = data, 0
            buffered = len(data)
        start = self._pos
        take = min(bufsize, buffered)
        chunk = self._buf[start : start + take]
        if take == buffered:
            self._buf, self._pos = b"", 0  # drained: do not hold the last chunk
        else:
            self._pos = start + take
        return chunk

    def pending(self) -> int:
        """Bytes readable without the kernel: the buffer's, and a TLS socket's own."""
        inner = self._inner_pending() if self._inner_pending is not None else 0
        return len(self._buf) - self._pos + int(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)
