"""The fast PUBACK path (mqttspool.mqtt.fastack) gives on_publish what paho's decoder would.

Generated PUBACK bodies: whenever the fast path takes one, paho's own decoder
must produce the same message id, reason code (value and name) and empty
properties; whatever it leaves to paho (properties, unknown codes, malformed
bodies) paho decodes (or refuses) itself. Then, on a real mosquitto, the
client acknowledges success, "no matching subscribers" and "not authorized"
PUBACKs without calling paho's decoder at all.
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from support.broker import BrokerFactory

from mqttspool.config import BrokerConfig
from mqttspool.mqtt.client import new_client
from mqttspool.mqtt.fastack import FAST_PUBACK, PUBACK_CODES, Client, plain_puback

PROTOCOLS = {True: MQTTProtocolVersion.MQTTv5, False: MQTTProtocolVersion.MQTTv311}
PUBACK_HEADER = 0x40


def paho_decode(body: bytes, v5: bool) -> tuple[int, ReasonCode, Properties] | None:
    """paho's own decoding of a PUBACK body (None when paho refuses it)."""
    try:
        packet = _packet.decode_puback(PUBACK_HEADER, body, PROTOCOLS[v5])
    except Exception:
        return None
    return packet.mid, packet.reason, packet.properties


def test_every_puback_reason_code_paho_knows_is_prebuilt() -> None:
    expected = {
        code
        for code, names in ReasonCode.names.items()
        if any(PacketTypes.PUBACK in types for types in names.values())
    }
    assert set(PUBACK_CODES) == expected
    assert {0x00, 0x10, 0x87} <= expected
    assert FAST_PUBACK


bodies = st.one_of(
    st.binary(max_size=8),
    st.tuples(
        st.binary(min_size=2, max_size=2),
        st.sampled_from([*sorted(PUBACK_CODES), 0x01, 0x7F, 0xFF]),
        st.sampled_from([b"", b"\x00", b"\x01", b"\x05\x1f\x00\x02ok"]),
    ).map(lambda t: t[0] + bytes([t[1]]) + t[2]),
)


@given(body=bodies, v5=st.booleans())
def test_the_fast_path_agrees_with_paho_on_every_body_it_takes(body: bytes, v5: bool) -> None:
    fast = plain_puback(body, v5)
    paho = paho_decode(body, v5)
    if fast is None:
        # Left to paho: it has properties, a code paho does not know, or a bad shape.
        assert len(body) != 2
        return
    assert paho is not None, f"fast path took a body paho refuses: {body!r}"
    mid, reason = fast
    paho_mid, paho_reason, paho_props = paho
    assert mid == paho_mid
    assert (reason.value, str(reason), reason.packetType) == (
        paho_reason.value,
        str(paho_reason),
        paho_reason.packetType,
    )
    assert paho_props.json() == {}  # type: ignore[no-untyped-call]


def test_bodies_with_properties_or_unknown_codes_go_to_paho() -> None:
    with_reason_string = b"\x00\x07\x10\x05\x1f\x00\x02ok"
    assert plain_puback(with_reason_string, True) is None
    assert plain_puback(b"\x00\x07\x01", True) is None  # 0x01 is no PUBACK reason code
    assert plain_puback(b"\x00\x07\x10", False) is None  # MQTT 3.1.1: exactly two bytes
    assert plain_puback(b"\x00\x07\x10\x00", True) == (7, PUBACK_CODES[0x10])
    assert plain_puback(b"\x01\x02", False) == (0x0102, PUBACK_CODES[0])


@pytest.mark.integration
@pytest.mark.parametrize("v5", [True, False], ids=["v5", "v3.1.1"])
def test_broker_pubacks_reach_on_publish_without_pahos_decoder(
    broker_factory: BrokerFactory, monkeypatch: pytest.MonkeyPatch, v5: bool
) -> None:
    """Success, no subscribers (0x10) and ACL denial (0x87) on a real mosquitto."""
    broker = broker_factory("auth")
    decoded: list[bytes] = []
    real_decode = _packet.decode_puback

    def counting(header: int, body: bytes, protocol: MQTTProtocolVersion) -> object:
        decoded.append(bytes(body))
        return real_decode(header, body, protocol)

    monkeypatch.setattr(_packet, "decode_puback", counting)
    cfg = BrokerConfig(
        host="127.0.0.1",
        port=broker.port,
        username="edge-01",
        password=broker.users["edge-01"],  # type: ignore[arg-type]
        protocol="5" if v5 else "3.1.1",
    )
    client = new_client(cfg, "fastack-edge-01", password=cfg.resolved_password())
    assert isinstance(client, Client)
    acks: dict[int, tuple[int, str]] = {}
    all_in = threading.Event()

    def on_publish(*args: object) -> None:
        _client, _userdata, mid, reason, _props = args
        assert isinstance(reason, ReasonCode) and isinstance(mid, int)
        acks[mid] = (reason.value, str(reason))
        if len(acks) == 3:
            all_in.set()

    subscribed = threading.Event()
    listener = mqtt.Client(CallbackAPIVersion.VERSION2, "fastack-listener")
    listener.username_pw_set("edge-01", broker.users["edge-01"])
    listener.on_subscribe = lambda *_: subscribed.set()
    listener.connect("127.0.0.1", broker.port)
    listener.loop_start()
    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        listener.subscribe("mqttspool/edge-01/heard/#", qos=1)
        assert subscribed.wait(10)
        heard = client.publish("mqttspool/edge-01/heard/t", b"1", qos=1).mid
        unheard = client.publish("mqttspool/edge-01/nobody/t", b"2", qos=1).mid
        denied = client.publish("mqttspool/edge-02/x/t", b"3", qos=1).mid
        assert all_in.wait(10), f"PUBACKs missing: {acks}"
    finally:
        client.disconnect()
        client.loop_stop()
        listener.disconnect()
        listener.loop_stop()
    if v5:
        assert acks == {
            heard: (0x00, "Success"),
            unheard: (0x10, "No matching subscribers"),
            denied: (0x87, "Not authorized"),
        }
    else:  # MQTT 3.1.1 has no reason codes: mosquitto acknowledges a denied publish
        assert acks == {mid: (0x00, "Success") for mid in (heard, unheard, denied)}
    assert decoded == []
