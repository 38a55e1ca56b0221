"""Proof that the integration-test infrastructure works, and would notice breakage.

Each test drives a real mosquitto (tests/support/broker.py) with a plain paho
client (`_Probe`) and asserts exact outcomes: PUBACK/CONNACK reason codes,
what the recorder received, what the proxy did to the TCP connection.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from support.broker import (
    DEFAULT_MAX_INFLIGHT,
    REWRITTEN_KEYS,
    SHIPPED_ACL,
    SHIPPED_CONFIGS,
    BrokerFactory,
    BrokerKind,
    MosquittoBroker,
    parse_directives,
    render_test_config,
)
from support.certs import CertBundle
from support.proxy import ProxyFactory
from support.recorder import RecorderFactory

pytestmark = pytest.mark.integration

SUCCESS = 0x00
NO_MATCHING_SUBSCRIBERS = 0x10
NOT_AUTHORIZED = 0x87


class _Probe:
    """A paho MQTT v5 client whose callbacks only record events.

    The callbacks take `self._cond`, which is never held around `publish()`
    (paho calls on_publish with its own lock held).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        keepalive: int = 10,
    ) -> None:
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"probe-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,  # a probe observes exactly one connection
        )
        self.client.max_inflight_messages_set(1000)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(
                ca_certs=str(ca_file),
                certfile=str(cert_file) if cert_file else None,
                keyfile=str(key_file) if key_file else None,
            )
        self.connacks: queue.SimpleQueue[tuple[ReasonCode, Properties | None]] = queue.SimpleQueue()
        self.disconnected = threading.Event()
        self.disconnect_reason: ReasonCode | None = None
        self.disconnect_from_server: bool | None = None
        self._cond = threading.Condition()
        self._acks: dict[int, ReasonCode] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def connect(self, timeout: float = 5.0) -> tuple[ReasonCode, Properties | None]:
        """Connect and return the CONNACK; ConnectionError if the link dies first."""
        self.client.connect(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.connacks.get(timeout=0.05)
            except queue.Empty:
                if self.disconnected.is_set():
                    raise ConnectionError(
                        f"closed before CONNACK: {self.disconnect_reason}"
                    ) from None
        raise TimeoutError(f"no CONNACK within {timeout} s")

    def publish(self, topic: str, payload: bytes, timeout: float = 5.0) -> ReasonCode:
        """Publish at QoS 1 and return the PUBACK reason code."""
        return self.wait_ack(self.publish_nowait(topic, payload), timeout)

    def publish_nowait(self, topic: str, payload: bytes) -> int:
        """Queue a QoS 1 publish and return its mid."""
        info = self.client.publish(topic, payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, info.rc
        return info.mid

    def wait_ack(self, mid: int, timeout: float) -> ReasonCode:
        """Wait for the PUBACK of `mid`; TimeoutError if none arrives in time."""
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._acks, timeout):
                raise TimeoutError(f"no PUBACK for mid {mid} within {timeout} s")
            return self._acks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connacks.put((reason_code, properties))

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.disconnect_reason = reason_code
        self.disconnect_from_server = flags.is_disconnect_packet_from_server
        self.disconnected.set()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._acks[mid] = reason_code
            self._cond.notify_all()


@pytest.fixture
def probes() -> Iterator[list[_Probe]]:
    """Probes appended here are closed at teardown."""
    made: list[_Probe] = []
    yield made
    for probe in made:
        probe.close()


def _probe(probes: list[_Probe], host: str, port: int, **options: Any) -> _Probe:
    probe = _Probe(host, port, **options)
    probes.append(probe)
    return probe


def _reading(seq: int, device: str = "edge-01") -> tuple[str, bytes]:
    """Topic and payload of a reading in the DESIGN.md wire format."""
    doc = {
        "id": f"{device}:e1:{seq}",
        "seq": seq,
        "device": device,
        "sensor": "sim",
        "metric": "temperature",
        "value": 20.0 + seq,
        "unit": "°C",
        "ts": "2026-11-26T00:00:00.000Z",
        "time_synced": True,
        "replay": False,
    }
    topic = f"mqttspool/{device}/sim/temperature"
    return topic, json.dumps(doc, separators=(",", ":")).encode()


# ------------------------------------------------------------ broker configs


@pytest.mark.parametrize("kind", ["plain", "auth", "tls"])
def test_running_config_is_the_shipped_config(
    broker_factory: BrokerFactory, kind: BrokerKind
) -> None:
    """What the tests run differs from mosquitto/*.conf only in listener, paths, log_dest
    and user."""
    broker = broker_factory(kind)
    shipped = parse_directives(SHIPPED_CONFIGS[broker.kind].read_text())
    running = parse_directives(broker.config_path.read_text())

    def kept(directives: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(key, value) for key, value in directives if key not in REWRITTEN_KEYS]

    assert kept(running) == kept(shipped)
    assert ("listener", f"{broker.port} 127.0.0.1") in running
    assert [key for key, _ in running if key == "listener"] == ["listener"]
    if kind == "auth":
        assert ("acl_file", str(SHIPPED_ACL)) in running


def test_shipped_configs_share_throughput_settings() -> None:
    """All three shipped configs raise Receive Maximum and the per-subscriber queue and
    disable Nagle, identically."""
    for path in SHIPPED_CONFIGS.values():
        directives = dict(parse_directives(path.read_text()))
        assert directives["max_inflight_messages"] == "1000", path
        assert directives["set_tcp_nodelay"] == "true", path
        assert directives["max_queued_messages"] == "100000", path
        assert directives["listener"].split()[0] in {"1883", "8883"}, path
        for key in ("password_file", "acl_file", "cafile", "certfile", "keyfile"):
            if key in directives:
                assert directives[key].startswith("/mosquitto/config/"), (path, key)


def test_render_test_config_overrides_and_rejects_two_listeners() -> None:
    """Overrides replace a directive in place or are appended; two listeners are refused."""
    shipped = "max_inflight_messages 1000\nuser mosquitto\nlistener 1883\n"
    rendered = render_test_config(
        shipped,
        port=4242,
        paths={},
        overrides={"max_inflight_messages": "20", "require_certificate": "true"},
        run_as="tester",
    )
    assert parse_directives(rendered) == [
        ("user", "tester"),
        ("max_inflight_messages", "20"),
        ("listener", "4242 127.0.0.1"),
        ("require_certificate", "true"),
    ]
    with pytest.raises(ValueError, match="exactly one listener"):
        render_test_config("listener 1\nlistener 2\n", port=1, paths={}, overrides={}, run_as="x")


def test_receive_maximum_follows_max_inflight_messages(
    broker_factory: BrokerFactory, probes: list[_Probe]
) -> None:
    """CONNACK announces the shipped 1000, or mosquitto's default 20 when overridden."""
    shipped = broker_factory()
    default = broker_factory(max_inflight_messages=DEFAULT_MAX_INFLIGHT)
    for broker, expected in ((shipped, 1000), (default, 20)):
        reason, properties = _probe(probes, broker.host, broker.port).connect()
        assert reason.value == SUCCESS
        assert properties is not None
        assert getattr(properties, "ReceiveMaximum", None) == expected


def test_puback_without_subscriber_is_0x10(broker: MosquittoBroker, probes: list[_Probe]) -> None:
    """With nobody subscribed, mosquitto acks a v5 QoS 1 publish with 0x10 (still success)."""
    probe = _probe(probes, broker.host, broker.port)
    probe.connect()
    reason = probe.publish(*_reading(1))
    assert reason.value == NO_MATCHING_SUBSCRIBERS
    assert not reason.is_failure


# -------------------------------------------------------------------- proxy


def test_qos1_through_proxy_reaches_recorder(
    broker: MosquittoBroker,
    proxy_factory: ProxyFactory,
    recorder_factory: RecorderFactory,
    probes: list[_Probe],
) -> None:
    """Ten QoS 1 readings sent through the proxy arrive once each, in order."""
    recorder = recorder_factory(broker)
    proxy = proxy_factory(broker)
    probe = _probe(probes, proxy.host, proxy.port)
    assert probe.connect()[0].value == SUCCESS
    reasons = [probe.publish(*_reading(seq)).value for seq in range(1, 11)]
    assert reasons == [SUCCESS] * 10  # a subscriber exists, so not 0x10
    recorder.wait_data_ids(10, timeout=5)
    assert recorder.data_ids() == [f"edge-01:e1:{seq}" for seq in range(1, 11)]
    assert recorder.seqs() == list(range(1, 11))
    assert recorder.duplicates() == {}
    assert proxy.accepted == 1
    assert proxy.active == 1


def test_cut_resets_connection_and_accepts_new_ones(
    broker: MosquittoBroker, proxy_factory: ProxyFactory, probes: list[_Probe]
) -> None:
    """cut() makes paho see a dropped link (no DISCONNECT packet); reconnects still work."""
    proxy = proxy_factory(broker)
    probe = _probe(probes, proxy.host, proxy.port)
    probe.connect()
    assert proxy.cut() == 1
    assert probe.disconnected.wait(5), "paho did not notice the cut"
    assert probe.disconnect_from_server is False
    assert probe.disconnect_reason is not None and probe.disconnect_reason.is_failure
    assert proxy.active == 0
    again = _probe(probes, proxy.host, proxy.port)
    assert again.connect()[0].value == SUCCESS
    assert proxy.accepted == 2


def test_refuse_closes_new_connections_only(
    broker: MosquittoBroker, proxy_factory: ProxyFactory, probes: list[_Probe]
) -> None:
    """refuse() resets new connections before CONNACK; existing ones keep working."""
    proxy = proxy_factory(broker)
    existing = _probe(probes, proxy.host, proxy.port)
    existing.connect()
    proxy.refuse()
    with pytest.raises(ConnectionError):
        _probe(probes, proxy.host, proxy.port).connect()
    assert existing.publish(*_reading(1)).value == NO_MATCHING_SUBSCRIBERS
    proxy.restore()
    assert _probe(probes, proxy.host, proxy.port).connect()[0].value == SUCCESS
    assert proxy.accepted == 3


def test_proxy_close_resets_connections_and_ends_its_thread(
    broker: MosquittoBroker, proxy_factory: ProxyFactory, probes: list[_Probe]
) -> None:
    """close() resets open connections, stops listening and joins the proxy's thread."""
    proxy = proxy_factory(broker)
    probe = _probe(probes, proxy.host, proxy.port)
    probe.connect()
    thread_name = f"TcpProxy-{proxy.port}"
    assert thread_name in {thread.name for thread in threading.enumerate()}
    proxy.close()
    assert probe.disconnected.wait(5)
    assert thread_name not in {thread.name for thread in threading.enumerate()}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=1).close()


def test_blackhole_stalls_silently_until_keepalive(
    broker: MosquittoBroker,
    proxy_factory: ProxyFactory,
    recorder_factory: RecorderFactory,
    probes: list[_Probe],
) -> None:
    """A blackholed publish is never acked or delivered, the TCP link stays open, and only
    the client's keepalive notices; after restore() new connections deliver again."""
    recorder = recorder_factory(broker)
    proxy = proxy_factory(broker)
    probe = _probe(probes, proxy.host, proxy.port, keepalive=2)
    probe.connect()
    proxy.blackhole()
    mid = probe.publish_nowait(*_reading(1))
    with pytest.raises(TimeoutError):
        probe.wait_ack(mid, timeout=1.0)
    assert probe.client.is_connected(), "paho should not know yet: nothing was closed"
    assert not probe.disconnected.is_set()
    assert proxy.active == 1
    assert recorder.data_ids() == []
    assert probe.disconnected.wait(8), "keepalive did not detect the half-open link"
    assert probe.disconnect_from_server is False

    proxy.restore()
    fresh = _probe(probes, proxy.host, proxy.port)
    assert fresh.connect()[0].value == SUCCESS
    assert fresh.publish(*_reading(2)).value == SUCCESS
    recorder.wait_data_ids(1, timeout=5)
    assert recorder.data_ids() == ["edge-01:e1:2"]  # seq 1 was swallowed, not flushed late


def test_delay_adds_latency_without_serialising(
    broker: MosquittoBroker, proxy_factory: ProxyFactory, probes: list[_Probe]
) -> None:
    """delay=0.1 adds ≥ 200 ms to a round trip, but 200 pipelined publishes still take ~1 RTT."""
    delay = 0.1
    proxy = proxy_factory(broker, delay=delay)
    probe = _probe(probes, proxy.host, proxy.port)
    probe.connect()
    started = time.monotonic()
    probe.publish(*_reading(0))
    rtt = time.monotonic() - started
    assert 2 * delay <= rtt < 2 * delay + 0.5

    started = time.monotonic()
    mids = [probe.publish_nowait(*_reading(seq)) for seq in range(1, 201)]
    reasons = {probe.wait_ack(mid, timeout=10).value for mid in mids}
    elapsed = time.monotonic() - started
    assert reasons == {NO_MATCHING_SUBSCRIBERS}
    # Serialised per message this would be 200 × 0.2 s; with a window of 20, ≥ 2 s.
    assert elapsed < 1.0, f"200 pipelined QoS 1 publishes took {elapsed:.2f} s"


# ------------------------------------------------------------- auth and ACL


def test_auth_broker_refuses_wrong_password(
    broker_factory: BrokerFactory, probes: list[_Probe]
) -> None:
    """Wrong password and anonymous logins get a refusing CONNACK; the right one succeeds.

    Mosquitto 2.0 answers a wrong password with 0x87 "Not authorized", not 0x86
    "Bad user name or password": a client must treat both as an auth failure.
    """
    broker = broker_factory("auth")
    wrong = _probe(probes, broker.host, broker.port, username="edge-01", password="nope")
    assert wrong.connect()[0].value == NOT_AUTHORIZED
    assert wrong.disconnected.wait(5)
    anonymous = _probe(probes, broker.host, broker.port)
    assert anonymous.connect()[0].value == NOT_AUTHORIZED
    right = _probe(
        probes, broker.host, broker.port, username="edge-01", password=broker.users["edge-01"]
    )
    assert right.connect()[0].value == SUCCESS


def test_acl_limits_device_to_its_own_subtree(
    broker_factory: BrokerFactory, recorder_factory: RecorderFactory, probes: list[_Probe]
) -> None:
    """edge-01 gets PUBACK 0x87 for edge-02's topic (connection stays up) and 0x00 for its own;
    the dashboard recorder sees only the allowed reading."""
    broker = broker_factory("auth")
    recorder = recorder_factory(broker)  # logs in as `dashboard`
    device = _probe(
        probes, broker.host, broker.port, username="edge-01", password=broker.users["edge-01"]
    )
    device.connect()
    denied = device.publish(*_reading(1, device="edge-02"))
    assert denied.value == NOT_AUTHORIZED
    assert device.client.is_connected()
    allowed = device.publish(*_reading(2, device="edge-01"))
    assert allowed.value == SUCCESS
    recorder.wait_data_ids(1, timeout=5)
    assert recorder.data_ids() == ["edge-01:e1:2"]
    dashboard = _probe(
        probes, broker.host, broker.port, username="dashboard", password=broker.users["dashboard"]
    )
    dashboard.connect()
    assert dashboard.publish(*_reading(3)).value == NOT_AUTHORIZED


# ---------------------------------------------------------------------- TLS


def test_tls_broker_checks_the_ca(
    broker_factory: BrokerFactory,
    recorder_factory: RecorderFactory,
    certs: CertBundle,
    probes: list[_Probe],
) -> None:
    """A client trusting the test CA connects (hostname 127.0.0.1 verified); one trusting
    an unrelated CA fails certificate verification."""
    broker = broker_factory("tls")
    recorder = recorder_factory(broker)
    good = _probe(probes, broker.host, broker.port, ca_file=certs.ca_cert)
    assert good.connect()[0].value == SUCCESS
    assert good.publish(*_reading(1)).value == SUCCESS
    assert recorder.wait_data_ids(1, timeout=5) == {"edge-01:e1:1"}
    wrong_ca = _probe(probes, broker.host, broker.port, ca_file=certs.other_ca_cert)
    with pytest.raises(ssl.SSLCertVerificationError):
        wrong_ca.connect()


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    broker_factory: BrokerFactory, certs: CertBundle, probes: list[_Probe]
) -> None:
    """With require_certificate, only a client certificate signed by the test CA gets in."""
    broker = broker_factory("tls", require_certificate=True)
    with_cert = _probe(
        probes,
        broker.host,
        broker.port,
        ca_file=certs.ca_cert,
        cert_file=certs.client_cert,
        key_file=certs.client_key,
    )
    assert with_cert.connect()[0].value == SUCCESS
    without_cert = _probe(probes, broker.host, broker.port, ca_file=certs.ca_cert)
    with pytest.raises((ConnectionError, ssl.SSLError)):
        without_cert.connect()
    foreign_cert = _probe(
        probes,
        broker.host,
        broker.port,
        ca_file=certs.ca_cert,
        cert_file=certs.other_client_cert,
        key_file=certs.other_client_key,
    )
    with pytest.raises((ConnectionError, ssl.SSLError)):
        foreign_cert.connect()


# ------------------------------------------------------- restart and session


def test_restart_and_kill_keep_the_port(
    broker: MosquittoBroker, recorder_factory: RecorderFactory, probes: list[_Probe]
) -> None:
    """restart() and kill()+start() come back on the same port with a new process; the
    recorder reconnects by itself and keeps receiving."""
    recorder = recorder_factory(broker)
    port, pid = broker.port, broker.pid
    broker.restart()
    assert broker.port == port
    assert broker.pid not in (None, pid)
    recorder.wait_connected(10, connects=2)
    # The log is a file mosquitto flushes per line: current while it runs.
    assert f"as {recorder.client_id} " in broker.log_text().split("--- starting")[-1]

    broker.kill()
    assert not broker.running
    broker.start()
    assert broker.port == port
    recorder.wait_connected(10, connects=3)
    probe = _probe(probes, broker.host, broker.port)
    probe.connect()
    assert probe.publish(*_reading(1)).value == SUCCESS
    assert recorder.wait_data_ids(1, timeout=5) == {"edge-01:e1:1"}


def test_recorder_session_survives_its_own_disconnect(
    broker: MosquittoBroker,
    proxy_factory: ProxyFactory,
    recorder_factory: RecorderFactory,
    probes: list[_Probe],
) -> None:
    """QoS 1 readings published while the recorder is cut off are queued by the broker
    (PUBACK 0x00: the session's subscription matched) and delivered on reconnect."""
    proxy = proxy_factory(broker)
    recorder = recorder_factory(broker, port=proxy.port)
    proxy.refuse()
    proxy.cut()
    recorder.wait_for(lambda _: not recorder.connected, timeout=5)

    probe = _probe(probes, broker.host, broker.port)
    probe.connect()
    reasons = {probe.publish(*_reading(seq)).value for seq in range(1, 21)}
    assert reasons == {SUCCESS}

    proxy.restore()
    recorder.wait_data_ids(20, timeout=10)
    assert recorder.data_ids() == [f"edge-01:e1:{seq}" for seq in range(1, 21)]
    assert recorder.duplicates() == {}
    assert recorder.connects == 2


def test_recorder_keeps_up_with_a_backlog_burst(
    broker: MosquittoBroker, recorder_factory: RecorderFactory, probes: list[_Probe]
) -> None:
    """5000 readings published as fast as a 1000-message window allows all reach a waiting
    recorder, in order: waiting must not starve paho's thread (a lagging subscriber makes
    mosquitto queue and, past max_queued_messages, drop its messages)."""
    recorder = recorder_factory(broker)
    probe = _probe(probes, broker.host, broker.port)
    probe.connect()
    mids = [probe.publish_nowait(*_reading(seq)) for seq in range(1, 5001)]
    assert {probe.wait_ack(mid, timeout=30).value for mid in mids} == {SUCCESS}
    assert len(recorder.wait_data_ids(5000, timeout=30)) == 5000
    assert recorder.seqs() == list(range(1, 5001))
    assert recorder.duplicates() == {}
