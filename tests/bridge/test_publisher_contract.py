"""One Publisher contract, run against the fake and against MqttPublisher on mosquitto.

As huey runs one storage test suite over every backend: the bridge's unit
tests trust :class:`fakes.publisher.FakePublisher` to behave like the real
publisher, so every case here runs against both. The real one talks to the
``auth`` mosquitto (user ``edge-01`` may write only ``mqttspool/edge-01/#``).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fakes.publisher import FakePublisher
from support.broker import BrokerFactory, MosquittoBroker
from support.proxy import TcpProxy

from mqttspool.config import BrokerConfig
from mqttspool.mqtt import (
    Acked,
    Connected,
    ConnectFailed,
    Disconnected,
    Event,
    FailureKind,
    MqttPublisher,
    Publisher,
    PublishProperties,
)

ALLOWED = "mqttspool/edge-01/contract/t"
DENIED = "mqttspool/edge-02/contract/t"  # the ACL lets edge-01 write only its own subtree
RECEIVE_MAXIMUM = 1000  # mosquitto/auth.conf: max_inflight_messages 1000
TOPIC_ALIAS_MAXIMUM = 10  # mosquitto's default max_topic_alias


@dataclass
class Backend:
    """Makes publishers of one implementation: to the broker, or to a closed port."""

    reachable: Callable[[], Publisher]
    unreachable: Callable[[], Publisher]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens here once the socket is closed


def _fake_backend() -> Backend:
    return Backend(
        reachable=lambda: FakePublisher(
            auto=True,
            receive_maximum=RECEIVE_MAXIMUM,
            denied_prefix="mqttspool/edge-02/",
            topic_alias_maximum=TOPIC_ALIAS_MAXIMUM,
        ),
        unreachable=lambda: FakePublisher(auto=True, reachable=False),
    )


def _mqtt_backend(broker_factory: BrokerFactory) -> Backend:
    broker = broker_factory("auth")

    def make(port: int) -> Publisher:
        cfg = BrokerConfig(
            host="127.0.0.1",
            port=port,
            username="edge-01",
            password=broker.users["edge-01"],  # type: ignore[arg-type]
        )
        return MqttPublisher(cfg, "contract-edge-01", None)

    return Backend(reachable=lambda: make(broker.port), unreachable=lambda: make(_closed_port()))


@pytest.fixture(params=["fake", pytest.param("mqtt", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The same contract over both implementations."""
    made: list[Publisher] = []

    def track(factory: Callable[[], Publisher]) -> Callable[[], Publisher]:
        def make() -> Publisher:
            pub = factory()
            made.append(pub)
            return pub

        return make

    if request.param == "fake":
        base = _fake_backend()
    else:
        base = _mqtt_backend(request.getfixturevalue("broker_factory"))
    yield Backend(track(base.reachable), track(base.unreachable))
    for pub in made:
        pub.close()


def next_event(pub: Publisher, wanted: type[Event], timeout: float = 10.0) -> Event:
    """The first event of type ``wanted`` (others are skipped), within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in pub.events():
            if isinstance(event, wanted):
                return event
        pub.wait(0.05)
    raise AssertionError(f"no {wanted.__name__} event within {timeout} s")


def connected(pub: Publisher) -> Connected:
    gen = pub.connect()
    event = next_event(pub, Connected)
    assert isinstance(event, Connected)
    assert event.generation == gen
    return event


def test_connect_reports_connected_with_receive_maximum(backend: Backend) -> None:
    event = connected(backend.reachable())
    assert event.receive_maximum == RECEIVE_MAXIMUM
    assert event.topic_alias_maximum == TOPIC_ALIAS_MAXIMUM


def _acks(pub: Publisher, n: int, timeout: float = 10.0) -> dict[int, int | str]:
    """mid -> "ok" (any success code, e.g. 0x10 no subscribers) or the failure code."""
    out: dict[int, int | str] = {}
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        for event in pub.events():
            if isinstance(event, Acked):
                out[event.mid] = "ok" if event.reason_code < 0x80 else event.reason_code
        pub.wait(0.05)
    return out


def test_publish_with_v5_properties_is_acked(backend: Backend) -> None:
    pub = backend.reachable()
    connected(pub)
    props = PublishProperties("application/vnd.mqttspool.batch+json", (("encoding", "zlib"),))
    mid = pub.publish(ALLOWED, b"x\x9c\x03\x00\x00\x00\x00\x01", 1, False, props)
    assert _acks(pub, 1) == {mid: "ok"}


def test_empty_topic_with_an_alias_publishes_to_the_aliased_topic(backend: Backend) -> None:
    """The broker resolves the alias: an empty topic on the denied topic's alias is denied."""
    pub = backend.reachable()
    connected(pub)
    mids = [
        pub.publish(ALLOWED, b"1", 1, False, PublishProperties(topic_alias=1)),
        pub.publish(DENIED, b"2", 1, False, PublishProperties(topic_alias=2)),
        pub.publish("", b"3", 1, False, PublishProperties(topic_alias=1)),
        pub.publish("", b"4", 1, False, PublishProperties(topic_alias=2)),
    ]
    assert _acks(pub, 4) == dict(zip(mids, ["ok", 0x87, "ok", 0x87], strict=True))


def test_qos1_publish_is_acked_with_success(backend: Backend) -> None:
    pub = backend.reachable()
    connected(pub)
    mid = pub.publish(ALLOWED, b"21.5", 1, False)
    assert mid is not None
    ack = next_event(pub, Acked)
    assert isinstance(ack, Acked)
    assert (ack.mid, ack.reason_code < 0x80) == (mid, True)


def test_acl_denied_publish_is_acked_with_not_authorized(backend: Backend) -> None:
    pub = backend.reachable()
    connected(pub)
    mid = pub.publish(DENIED, b"21.5", 1, False)
    ack = next_event(pub, Acked)
    assert isinstance(ack, Acked)
    assert (ack.mid, ack.reason_code) == (mid, 0x87)


def test_close_reports_disconnected_and_publish_refuses(backend: Backend) -> None:
    pub = backend.reachable()
    gen = connected(pub).generation
    pub.close()
    event = next_event(pub, Disconnected)
    assert isinstance(event, Disconnected)
    assert (event.generation, event.kind) == (gen, FailureKind.CLOSED)
    assert pub.publish(ALLOWED, b"x", 1, False) is None


def test_connect_to_a_closed_port_fails_with_kind_network(backend: Backend) -> None:
    pub = backend.unreachable()
    gen = pub.connect()
    event = next_event(pub, ConnectFailed)
    assert isinstance(event, ConnectFailed)
    assert (event.generation, event.kind) == (gen, FailureKind.NETWORK)
    assert event.reason


def _quiet_publisher(broker: MosquittoBroker, port: int, client_id: str) -> MqttPublisher:
    """A connected MqttPublisher as edge-01 via ``port``, its events drained and its
    wake-up flag (set by the CONNACK) cleared."""
    cfg = BrokerConfig(
        host="127.0.0.1",
        port=port,
        username="edge-01",
        password=broker.users["edge-01"],  # type: ignore[arg-type]
    )
    pub = MqttPublisher(cfg, client_id, None)
    connected(pub)
    pub.events()
    pub.wait(0)
    return pub


@pytest.mark.integration
@pytest.mark.parametrize("acks_wake", [True, False])
def test_a_puback_ends_a_wait_only_while_acks_wake(
    broker_factory: BrokerFactory, acks_wake: bool
) -> None:
    """MqttPublisher: with ``acks_wake`` off the PUBACK is queued without waking the
    waiter (the daemon's bridge handles it on its next wake-up). A proxy delays the
    PUBACK by 0.4 s so that it arrives during the wait."""
    broker = broker_factory("auth")
    proxy = TcpProxy(broker.host, broker.port, delay=0.2)
    pub = _quiet_publisher(broker, proxy.port, "contract-lazy-acks")
    try:
        pub.acks_wake = acks_wake
        mid = pub.publish(ALLOWED, b"21.5", 1, False)
        started = time.monotonic()
        pub.wait(3.0)
        waited = time.monotonic() - started
        ack = next_event(pub, Acked)
    finally:
        pub.close()
        proxy.close()
    assert isinstance(ack, Acked) and ack.mid == mid
    if acks_wake:
        assert waited < 2.5  # ended by the PUBACK (~0.4 s)
    else:
        assert waited >= 3.0  # the PUBACK was queued, the wait ran to its timeout


@pytest.mark.integration
def test_a_puback_queued_while_acks_do_not_wake_waits_until_they_do(
    broker_factory: BrokerFactory,
) -> None:
    """MqttPublisher: a PUBACK that arrived while ``acks_wake`` was off (during a
    bridge step, after it drained the queue) does not end the next wait: the daemon's
    bridge would otherwise step once more per round for nothing. Turning ``acks_wake``
    on wakes the waiter at once (a full window must not wait for a timer)."""
    broker = broker_factory("auth")
    pub = _quiet_publisher(broker, broker.port, "contract-queued-ack")
    try:
        pub.acks_wake = False
        mid = pub.publish(ALLOWED, b"21.5", 1, False)
        deadline = time.monotonic() + 10
        while pub._events.empty():  # the queue itself: events() would take the ack
            assert time.monotonic() < deadline, "no PUBACK within 10 s"
            time.sleep(0.01)
        started = time.monotonic()
        pub.wait(0.5)
        lazy_wait = time.monotonic() - started
        pub.acks_wake = True
        started = time.monotonic()
        pub.wait(3.0)
        woken_wait = time.monotonic() - started
        events = pub.events()
    finally:
        pub.close()
    assert lazy_wait >= 0.5  # the queued PUBACK did not end it
    assert woken_wait < 2.5  # acks_wake on: the queued PUBACK ends the wait at once
    assert [(type(e), getattr(e, "mid", None)) for e in events] == [(Acked, mid)]
