"""Corked writes: several publishes, one wake-up of paho's network thread.

paho's ``publish()`` queues the packet and writes a byte to a socket pair
that wakes the network thread's ``select()``, once per message. When the
bridge hands paho a round of readings, every one of those bytes wakes the
network thread while the bridge still holds the GIL for the next publish:
the two threads take turns per message (a futex and a context switch each
way). Measured at 10 readings/s, that hand-off, not the work, was most of
the network thread's wake-ups.

:meth:`CorkingClient.corked` queues the packets without the byte and wakes
the thread once when the block ends -- or earlier, every
:data:`CORK_FLUSH_BYTES`, so a fill of large batches starts going out while
the rest is built. Packets that paho's own thread queues meanwhile (PINGREQ,
acknowledgements of incoming messages) are written on its next pass, which
checks for queued packets before every ``select()``.

When the network thread writes, it joins the QoS 1 PUBLISH packets waiting
at the head of its queue (up to :data:`COALESCE_MAX_BYTES`) into one
``send()``: a round of ten readings is one TCP segment and one wake-up of
the broker, not ten. paho does nothing on completing a QoS 1 PUBLISH write
(its PUBACK settles it), so the joined packet needs no bookkeeping; a packet
paho has started writing, a QoS 0 one and anything else are left as they
are.

Reads go through :class:`~mqttspool.mqtt.readbuf.BufferedSocket` (one
``recv()`` per burst of PUBACKs instead of three per PUBACK).

It relies on paho internals (``_packet_queue``, ``_packet_write``,
``_out_packet``, ``_sockpairW``, ``_thread``, ``_create_socket``); if a
release renames them, :data:`CORK` or :data:`BUFFERED_READS` is False and
the client behaves like paho's.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MessageType, MQTTErrorCode

from mqttspool.mqtt.readbuf import BufferedSocket

CORK_FLUSH_BYTES = 8192  # wake the network thread at least this often within a block
COALESCE_MAX_BYTES = 65536  # at most this much in one joined write
_WAKE_BYTE = b"0"  # what paho itself writes to the socket pair


def _queue_signature_known() -> bool:
    queue = getattr(mqtt.Client, "_packet_queue", None)
    if queue is None:
        return False
    names = list(inspect.signature(queue).parameters)
    return hasattr(mqtt.Client, "_packet_write") and names == [
        "self",
        "command",
        "packet",
        "mid",
        "qos",
        "info",
    ]


CORK = _queue_signature_known()
BUFFERED_READS = hasattr(mqtt.Client, "_create_socket")


class CorkingClient(mqtt.Client):
    """paho's client with :meth:`corked` (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._corked = False
        self._corked_bytes = 0  # queued in this block since the last wake-up

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Publish within the block with one wake-up of the network thread at its end.

        Only for the one thread that publishes; a no-op without a network thread.
        """
        if not CORK or self._corked:
            yield
            return
        self._corked, self._corked_bytes = True, 0
        try:
            yield
        finally:
            self._corked = False
            if self._corked_bytes:
                self._wake_network_thread()

    def _wake_network_thread(self) -> None:
        self._corked_bytes = 0
        sock = self._sockpairW
        if sock is not None:
            with contextlib.suppress(BlockingIOError):  # already full of wake-ups
                sock.send(_WAKE_BYTE)

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        if not self._corked or self._thread is None:
            return super()._packet_queue(command, packet, mid, qos, info)
        self._out_packet.append(_out_entry(command, mid, qos, packet, info))
        self._corked_bytes += len(packet)
        if self._corked_bytes >= CORK_FLUSH_BYTES:
            self._wake_network_thread()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_write(self) -> MQTTErrorCode:
        if CORK:
            self._coalesce_publishes()
        return super()._packet_write()

    def _coalesce_publishes(self) -> None:
        """Join the unstarted QoS 1/2 PUBLISH packets at the head of the queue into one.

        Runs on the thread that writes (paho's); publishers only append on the right,
        so the head is read by index (iterating would race with their appends).
        """
        out = self._out_packet
        count = size = 0
        while count < len(out) and _joinable(out[count], size, first=count == 0):
            size += out[count]["to_process"]
            count += 1
        if count < 2:
            return
        joined = [out.popleft() for _ in range(count)]
        head = joined[0]
        packet = b"".join(p["packet"] for p in joined)
        # "info" is read only for QoS 0; the PUBACKs settle these through _out_messages.
        out.appendleft(_out_entry(head["command"], head["mid"], head["qos"], packet, None))

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if BUFFERED_READS and getattr(self, "_transport", "") == "tcp":
            return BufferedSocket(sock)  # see mqttspool.mqtt.readbuf
        return sock


def _out_entry(command: int, mid: int, qos: int, packet: bytes | bytearray, info: Any) -> Any:
    """One entry of paho's ``_out_packet`` queue, as ``_packet_queue`` builds it."""
    return {
        "command": command,
        "mid": mid,
        "qos": qos,
        "pos": 0,
        "to_process": len(packet),
        "packet": packet,
        "info": info,
    }


def _joinable(entry: Any, size: int, first: bool) -> bool:
    """An unstarted QoS 1/2 PUBLISH that fits the joined write (the first always does)."""
    return (
        entry["command"] & 0xF0 == MessageType.PUBLISH
        and entry["qos"] > 0
        and entry["pos"] == 0
        and (first or size + entry["to_process"] <= COALESCE_MAX_BYTES)
    )
