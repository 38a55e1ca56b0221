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

It relies on paho internals (``_packet_queue``, ``_out_packet``,
``_sockpairW``, ``_thread``); if a release renames them, :data:`CORK` is
False and :meth:`corked` does nothing.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

CORK_FLUSH_BYTES = 8192  # wake the network thread at least this often within a block
_WAKE_BYTE = b"0"  # what paho itself writes to the socket pair


def _queue_signature_known() -> bool:
    queue = getattr(mqtt.Client, "_packet_queue", None)
    if queue is None:
        return False
    names = list(inspect.signature(queue).parameters)
    return names == ["self", "command", "packet", "mid", "qos", "info"]


CORK = _queue_signature_known()


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
        self._out_packet.append(
            {
                "command": command,
                "mid": mid,
                "qos": qos,
                "pos": 0,
                "to_process": len(packet),
                "packet": packet,
                "info": info,
            }
        )
        self._corked_bytes += len(packet) or 1
        if self._corked_bytes >= CORK_FLUSH_BYTES:
            self._wake_network_thread()
        return MQTTErrorCode.MQTT_ERR_SUCCESS
