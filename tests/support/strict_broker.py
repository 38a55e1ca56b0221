"""A tiny MQTT 5 server that enforces Receive Maximum, as EMQX and HiveMQ may.

Mosquitto tolerates a client that exceeds the Receive Maximum it announced;
the MQTT 5 spec lets a broker disconnect it with 0x93 instead. This server
does, so a test can prove that every QoS 1 message the bridge sends (readings
and control messages alike) stays inside the window::

    with StrictBroker(receive_maximum=4) as broker:   # 127.0.0.1, ephemeral port
        ...connect an MQTT 5 client to broker.port...
        broker.acking = False   # stop sending PUBACK (a broker that hangs)
        broker.acking = True
    broker.published       # (topic, payload) of every PUBLISH received
    broker.max_inflight    # most QoS 1 messages ever unacknowledged at once
    broker.violations      # connections closed with DISCONNECT 0x93

A second CONNECT with a client id already connected ends the older connection
with DISCONNECT 0x8E "Session taken over", as the MQTT 5 spec suggests (and as
mosquitto 2.0.11 does not: it closes the socket without a reason). Each
connection is served in its own thread; only CONNECT, PUBLISH (QoS 0/1),
PINGREQ and DISCONNECT are understood.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Self

from .servers import starting

RECEIVE_MAXIMUM_EXCEEDED = 0x93
SESSION_TAKEN_OVER = 0x8E
_CONNECT, _PUBLISH, _PINGREQ, _DISCONNECT = 1, 3, 12, 14


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _ClosedError(Exception):
    """The peer went away (or the server is stopping)."""


class StrictBroker:
    """MQTT 5 on raw sockets: CONNACK announces ``receive_maximum``; exceeding it ends the link."""

    def __init__(self, receive_maximum: int = 4, ack_delay: float = 0.005) -> None:
        starting("the strict MQTT broker")
        self.receive_maximum = receive_maximum
        self.ack_delay = ack_delay
        self.acking = True
        self.published: list[tuple[str, bytes]] = []
        self.max_inflight = 0
        self.violations = 0
        self.connects = 0
        self._clients: dict[str, socket.socket] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.host = "127.0.0.1"
        self.port: int = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="strict-broker", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        unacked: dict[int, float] = {}  # packet id -> when it may be acknowledged
        try:
            while not self._stop.is_set():
                self._send_due_acks(conn, unacked)
                due = min(unacked.values(), default=None) if self.acking else None
                wait = 0.05 if due is None else min(0.05, max(0.0005, due - time.monotonic()))
                conn.settimeout(wait)
                packet = self._read_packet(conn)
                if packet is not None and not self._handle(conn, *packet, unacked):
                    return
        except (_ClosedError, OSError):
            return
        finally:
            conn.close()

    def _handle(
        self, conn: socket.socket, kind: int, flags: int, body: bytes, unacked: dict[int, float]
    ) -> bool:
        if kind == _CONNECT:
            self._take_over(conn, _client_id(body))
            props = b"\x21" + struct.pack(">H", self.receive_maximum)
            conn.sendall(
                b"\x20" + _varint(3 + len(props)) + b"\x00\x00" + _varint(len(props)) + props
            )
        elif kind == _PINGREQ:
            conn.sendall(b"\xd0\x00")
        elif kind == _DISCONNECT:
            return False
        elif kind == _PUBLISH:
            return self._on_publish(conn, flags, body, unacked)
        return True

    def _on_publish(
        self, conn: socket.socket, flags: int, body: bytes, unacked: dict[int, float]
    ) -> bool:
        qos = (flags >> 1) & 3
        (topic_len,) = struct.unpack_from(">H", body)
        topic = body[2 : 2 + topic_len].decode()
        pos = 2 + topic_len
        if qos:
            (pid,) = struct.unpack_from(">H", body, pos)
            pos += 2
            unacked[pid] = time.monotonic() + self.ack_delay
            self.max_inflight = max(self.max_inflight, len(unacked))
        props_len, pos = self._decode_varint(body, pos)
        self.published.append((topic, body[pos + props_len :]))
        if len(unacked) > self.receive_maximum:
            self.violations += 1
            conn.sendall(bytes([_DISCONNECT << 4, 2, RECEIVE_MAXIMUM_EXCEEDED, 0]))
            return False
        return True

    def _take_over(self, conn: socket.socket, client_id: str) -> None:
        with self._lock:
            self.connects += 1
            old = self._clients.get(client_id)
            self._clients[client_id] = conn
        if old is not None:
            try:
                old.sendall(bytes([_DISCONNECT << 4, 2, SESSION_TAKEN_OVER, 0]))
                old.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone

    def _send_due_acks(self, conn: socket.socket, unacked: dict[int, float]) -> None:
        if not self.acking:
            return
        now = time.monotonic()
        for pid in [p for p, due in unacked.items() if due <= now]:
            del unacked[pid]
            conn.sendall(b"\x40\x02" + struct.pack(">H", pid))

    def _read_packet(self, conn: socket.socket) -> tuple[int, int, bytes] | None:
        try:
            first = conn.recv(1)
        except TimeoutError:
            return None
        if not first:
            raise _ClosedError
        length, multiplier = 0, 1
        while True:
            (digit,) = self._recv_exact(conn, 1)
            length += (digit & 0x7F) * multiplier
            multiplier *= 128
            if not digit & 0x80:
                break
        return first[0] >> 4, first[0] & 0x0F, self._recv_exact(conn, length)

    def _recv_exact(self, conn: socket.socket, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            try:
                chunk = conn.recv(n - len(data))
            except TimeoutError:
                if self._stop.is_set():
                    raise _ClosedError from None
                continue
            if not chunk:
                raise _ClosedError
            data += chunk
        return bytes(data)

    @staticmethod
    def _decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
        value, multiplier = 0, 1
        while True:
            digit = buf[pos]
            pos += 1
            value += (digit & 0x7F) * multiplier
            multiplier *= 128
            if not digit & 0x80:
                return value, pos


def _client_id(connect: bytes) -> str:
    """The client id of a CONNECT body (MQTT 5: name, level, flags, keepalive, properties)."""
    (name_len,) = struct.unpack_from(">H", connect)
    pos = 2 + name_len + 4  # protocol name, level, connect flags, keepalive
    props_len, pos = StrictBroker._decode_varint(connect, pos)
    pos += props_len
    (id_len,) = struct.unpack_from(">H", connect, pos)
    return connect[pos + 2 : pos + 2 + id_len].decode()
