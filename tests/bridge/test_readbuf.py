"""Buffered reads (mqttspool.mqtt.readbuf): whatever the kernel's chunks and paho's
read sizes, the bytes come out whole and in order, pending() tells paho about the
buffer, and a burst of PUBACKs costs one recv() instead of three per packet."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqttspool.mqtt.readbuf import READ_CHUNK, BufferedSocket


class ChunkedSocket:
    """Delivers a stream in the given chunks (one per recv), then would block."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.recvs = 0

    def recv(self, bufsize: int) -> bytes:
        self.recvs += 1
        if not self.chunks:
            raise BlockingIOError
        chunk = self.chunks.pop(0)
        if len(chunk) > bufsize:
            self.chunks.insert(0, chunk[bufsize:])
            chunk = chunk[:bufsize]
        return chunk

    def send(self, data: bytes) -> int:
        return len(data)


def _read_all(sock: Any, sizes: list[int]) -> bytes:
    """Read as paho does: a size at a time until the socket would block."""
    out = b""
    i = 0
    while True:
        try:
            data = sock.recv(sizes[i % len(sizes)])
        except BlockingIOError:
            return out
        assert len(data) <= sizes[i % len(sizes)]
        out += data
        i += 1


@given(
    st.lists(st.binary(min_size=1, max_size=200), max_size=20),
    st.lists(st.integers(1, 300), min_size=1, max_size=10),
)
def test_the_bytes_come_out_whole_and_in_order(chunks: list[bytes], sizes: list[int]) -> None:
    sock = BufferedSocket(ChunkedSocket(chunks))
    assert _read_all(sock, sizes) == b"".join(chunks)
    assert sock.pending() == 0


@given(st.binary(min_size=2, max_size=500), st.integers(1, 100))
def test_pending_counts_what_the_buffer_holds(data: bytes, first: int) -> None:
    sock = BufferedSocket(ChunkedSocket([data]))
    got = sock.recv(first)
    assert got == data[:first]
    assert sock.pending() == len(data) - len(got)


def test_end_of_stream_is_an_empty_read() -> None:
    left, right = socket.socketpair()
    try:
        sock = BufferedSocket(left)
        right.sendall(b"ab")
        right.close()
        assert (sock.recv(1), sock.recv(1), sock.recv(1)) == (b"a", b"b", b"")
    finally:
        left.close()


def test_a_burst_of_pubacks_costs_one_recv() -> None:
    """Ten PUBACKs in the kernel's buffer, read as paho reads them (command byte,
    length byte, body): one recv() and one that would block, not thirty-one."""
    left, right = socket.socketpair()
    left.setblocking(False)
    try:
        counted = CountingSocket(left)
        sock = BufferedSocket(counted)
        right.sendall(b"".join(bytes([0x40, 2, 0, mid]) for mid in range(1, 11)))
        mids = []
        for _ in range(10):
            command, length = sock.recv(1), sock.recv(1)
            body = sock.recv(length[0])
            assert command == b"\x40"
            mids.append(body[1])
        assert sock.pending() == 0
        with pytest.raises(BlockingIOError):
            sock.recv(1)  # the kernel has nothing more
        assert mids == list(range(1, 11))
        assert counted.recvs == 2
    finally:
        left.close()
        right.close()


class CountingSocket:
    """A real socket, counting recv() calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send = sock.send
        self.recvs = 0

    def recv(self, bufsize: int) -> bytes:
        self.recvs += 1
        assert bufsize >= READ_CHUNK  # one large read, never paho's byte at a time
        return self.sock.recv(bufsize)
