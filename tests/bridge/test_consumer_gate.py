"""The consumer gate in the bridge, with a fake clock and publisher:
``bridge.require_subscribers`` (PUBACK 0x10) and ``bridge.consumer_topic``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from fakes.clock import FakeClock
from fakes.publisher import FakePublisher
from support.spooltools import all_seqs

from mqttspool.bridge import Bridge, build_bridge
from mqttspool.config import load_config
from mqttspool.counters import READINGS_PAUSED, Counters
from mqttspool.gate import ConsumerGate, consumer_online
from mqttspool.mqtt import ConsumerState
from mqttspool.reading import Reading, from_us
from mqttspool.spool import Spool, open_spool

NO_SUBSCRIBERS = 0x10


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_bridge(
    tmp_path: Path, clock: FakeClock, n: int, **bridge: Any
) -> tuple[Bridge, FakePublisher, Spool]:
    cfg = load_config(None, environ={})
    cfg.spool.path = str(tmp_path / "spool.db")
    cfg.device.id = "edge-01"
    cfg.bridge.reconnect_max = 30
    for key, value in bridge.items():
        setattr(cfg.bridge, key, value)
    spool = open_spool(cfg.spool, clock)
    ts = from_us(clock.wall_us())
    spool.append(
        [Reading(device="edge-01", sensor="s", metric="m", value=float(i), ts=ts) for i in range(n)]
    )
    pub = FakePublisher()
    bridge_ = build_bridge(cfg, spool, pub, clock, Counters(), rng=random.Random(7))
    return bridge_, pub, spool


def connect(bridge: Bridge, pub: FakePublisher, now: float) -> None:
    bridge.step(now)
    pub.accept()
    bridge.step(now)
    pub.ack_control()
    bridge.step(now)


def step(bridge: Bridge, pub: FakePublisher, *times: float) -> None:
    """Step at each time; the broker acknowledges status and snapshots as they go."""
    for t in times:
        bridge.step(t)
        pub.ack_control()


def seqs(pub: FakePublisher) -> list[int]:
    return [int(s.doc()["seq"]) for s in pub.data()]


def last_snapshot(pub: FakePublisher) -> dict[str, Any]:
    return [s for s in pub.control() if s.topic.endswith("/spool")][-1].doc()


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        (b"online", True),
        (b" ONLINE\n", True),
        (b'{"online": true, "timestamp": 1700000000000}', True),  # Sparkplug 3.0 STATE
        (b'{"online": false, "timestamp": 1}', False),
        (b'{"online": "true"}', False),
        (b"offline", False),
        (b"", False),
        (b"\xff", False),
        (b"[" * 100_000 + b"]" * 100_000, False),  # a rogue state cannot crash the bridge
        (b'{"online": true, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", False),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_consumer_state_payloads(payload: bytes, online: bool) -> None:
    assert consumer_online(payload) is online


def test_no_subscribers_keeps_rows_pauses_and_probes_with_one(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, 5, require_subscribers=True, max_inflight=3)
    connect(bridge, pub, 0.0)
    assert seqs(pub) == [1, 2, 3]
    pub.ack_all_data(NO_SUBSCRIBERS)
    step(bridge, pub, 0.1, 0.2, 5.0, 29.9)
    assert seqs(pub) == [1, 2, 3]  # paused: nothing new
    assert all_seqs(spool) == [1, 2, 3, 4, 5]  # nothing deleted
    assert last_snapshot(pub)["readings_paused"] == "no_subscribers"
    assert bridge.counters.gauge(READINGS_PAUSED) == 1
    step(bridge, pub, 30.2, 30.3)  # reconnect_max after the last 0x10: one probe, the oldest
    assert seqs(pub) == [1, 2, 3, 1]
    pub.ack([pub.data()[-1].mid], NO_SUBSCRIBERS)  # the probe finds nobody either
    step(bridge, pub, 30.4, 45.0, 59.0)
    assert seqs(pub) == [1, 2, 3, 1]
    assert all_seqs(spool) == [1, 2, 3, 4, 5]
    step(bridge, pub, 60.5)
    assert seqs(pub) == [1, 2, 3, 1, 1]  # the second probe: still the oldest row
    pub.ack([pub.data()[-1].mid])  # a subscriber now: success resumes everything
    for t in (60.6, 60.7, 60.8, 60.9):
        step(bridge, pub, t)
        pub.ack_all_data()
    step(bridge, pub, 61.0, 61.2)
    assert seqs(pub)[5:] == [2, 3, 4, 5]
    assert all_seqs(spool) == []
    assert last_snapshot(pub)["readings_paused"] is None
    assert bridge.counters.gauge(READINGS_PAUSED) == 0


def test_no_subscribers_is_success_when_not_required(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, 3)
    connect(bridge, pub, 0.0)
    pub.ack_all_data(NO_SUBSCRIBERS)
    bridge.step(0.1)
    bridge.step(0.2)
    assert all_seqs(spool) == []


def test_consumer_topic_gates_readings_and_a_flip_mid_drain_settles_in_flight(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make_bridge(
        tmp_path, clock, 10, consumer_topic="spBv1.0/STATE/host", max_inflight=4
    )
    connect(bridge, pub, 0.0)
    step(bridge, pub, 0.1)
    assert seqs(pub) == []  # no state yet: absent means keep spooling
    assert last_snapshot(pub)["readings_paused"] == "consumer_offline"
    pub.pending.append(ConsumerState(pub.generation, online=True))
    step(bridge, pub, 0.2, 0.25)
    assert seqs(pub) == [1, 2, 3, 4]
    pub.pending.append(ConsumerState(pub.generation, online=False))  # flips mid-drain
    step(bridge, pub, 0.3)
    pub.ack_all_data()
    step(bridge, pub, 0.4, 0.5, 0.6)
    assert seqs(pub) == [1, 2, 3, 4]  # nothing new went out
    assert all_seqs(spool) == [5, 6, 7, 8, 9, 10]  # the in-flight four settled normally
    pub.pending.append(ConsumerState(pub.generation, online=True))
    for t in (0.7, 0.8, 0.9, 1.0, 1.1):
        step(bridge, pub, t)
        pub.ack_all_data()
    step(bridge, pub, 1.3)
    assert seqs(pub) == list(range(1, 11))
    assert all_seqs(spool) == []


def test_a_new_connection_waits_for_the_consumer_state_again() -> None:
    gate = ConsumerGate(False, "state/topic", 60)
    gate.on_consumer_state(True)
    assert gate.allowance(0.0, 0).readings is None
    gate.on_connect()
    assert gate.allowance(0.0, 0).readings == 0
    assert gate.paused == "consumer_offline"
