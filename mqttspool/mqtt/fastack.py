"""A paho client that handles the common PUBACKs without paho's slow decoder.

paho 2.x decodes every PUBACK into two fresh ``ReasonCode`` and two fresh
``Properties`` objects (pure Python that copies a table of ~45 names per
``ReasonCode``). Measured on the drain benchmark, that is half the CPU of
paho's network thread and a third of a whole 50k-reading drain, in mqttspool
and in a plain paho loop alike.

Nearly every PUBACK is 2 bytes (the message id: MQTT 3.1.1, or MQTT 5
success), 3 bytes (id + reason code: MQTT 5 "no matching subscribers",
"not authorized"...) or 4 bytes with an empty property block. For those,
:class:`Client` passes ``on_publish`` one shared, prebuilt ``ReasonCode`` per
code and one shared empty ``Properties`` -- equal to what paho's decoder
would build (``tests/bridge/test_fastack.py`` compares them for every code and
shape). Anything else (properties, a reason code paho does not know for
PUBACK, a malformed packet, PUBCOMP) goes through paho's own decoder, so
its errors and behaviour are paho's.

The fast path uses paho internals (``_in_packet``, ``_out_message_mutex``,
``_out_messages``, ``_do_on_publish``); if a paho release renames them, the
client uses paho's path throughout (:data:`FAST_PUBACK` is then False).
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from mqttspool.mqtt.cork import CorkingClient

_INTERNALS = ("_in_packet", "_out_message_mutex", "_out_messages", "_protocol")
_METHODS = ("_handle_pubackcomp", "_do_on_publish", "_easy_log")


def _puback_codes() -> dict[int, ReasonCode]:
    """One ReasonCode per code paho accepts on a PUBACK (built once, shared)."""
    codes = {}
    for code, names in ReasonCode.names.items():
        if any(PacketTypes.PUBACK in types for types in names.values()):
            codes[code] = ReasonCode(PacketTypes.PUBACK, identifier=code)
    return codes


PUBACK_CODES = _puback_codes()
NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
FAST_PUBACK = all(hasattr(mqtt.Client, name) for name in _METHODS)


def plain_puback(packet: bytes | bytearray, v5: bool) -> tuple[int, ReasonCode] | None:
    """``(mid, reason)`` of a PUBACK body without properties; None for anything else.

    MQTT 3.1.1: exactly the 2-byte id. MQTT 5: the id, optionally a reason
    code paho knows for PUBACK, optionally an empty property block.
    """
    size = len(packet)
    if size == 2:
        return (packet[0] << 8) | packet[1], PUBACK_CODES[0]
    if not v5 or not 3 <= size <= 4 or (size == 4 and packet[3] != 0):
        return None
    reason = PUBACK_CODES.get(packet[2])
    if reason is None:
        return None
    return (packet[0] << 8) | packet[1], reason


class Client(CorkingClient):
    """paho's client with the fast PUBACK path (see the module) and corked writes
    (:mod:`mqttspool.mqtt.cork`): the client :func:`~mqttspool.mqtt.client.new_client`
    builds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_puback = FAST_PUBACK and all(hasattr(self, name) for name in _INTERNALS)

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        if cmd != "PUBACK" or not self._fast_puback:
            return super()._handle_pubackcomp(cmd)
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        plain = plain_puback(self._in_packet["packet"], v5)
        if plain is None:
            return super()._handle_pubackcomp(cmd)
        mid, reason = plain
        self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received %s (Mid: %d)", cmd, mid)
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
