"""The bridge in ``batch`` and ``mixed`` mode, and topic aliases, with a fake clock and
publisher: batch bounds, one PUBACK settles a batch, the window counts readings, linger,
mixed routing, resend after a cut, Home Assistant hook."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from fakes.clock import FakeClock
from fakes.publisher import FakePublisher, Sent

from mqttspool.batch import CONTENT_TYPE, decode, encode_within
from mqttspool.bridge import Bridge, OutMessage, build_bridge
from mqttspool.config import Settings, load_config
from mqttspool.reading import Reading, StoredReading, from_us
from mqttspool.spool import Spool, open_spool

OLD_S = 3600.0  # an hour old: replay (bridge.live_window is 60 s)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(
    tmp_path: Path, clock: FakeClock, companions: Any = (), **bridge: Any
) -> tuple[Bridge, FakePublisher, Spool]:
    cfg: Settings = load_config(None, environ={})
    cfg.spool.path = str(tmp_path / "spool.db")
    cfg.device.id = "edge-01"
    for key, value in bridge.items():
        setattr(cfg.bridge, key, value)
    spool = open_spool(cfg.spool, clock)
    pub = FakePublisher()
    return (
        build_bridge(cfg, spool, pub, clock, companions=companions, rng=random.Random(3)),
        pub,
        spool,
    )


def fill(
    spool: Spool, clock: FakeClock, n: int, age_s: float = 0.0, streams: int = 1, rng: Any = None
) -> list[int]:
    ts = from_us(clock.wall_us() - int(age_s * 1_000_000))
    readings = [
        Reading(
            device="edge-01",
            sensor="sim",
            metric=f"m{i % streams}",
            value=rng.random() if rng else float(i),
            ts=ts,
        )
        for i in range(n)
    ]
    return spool.append(readings).seqs


def connect(
    bridge: Bridge, pub: FakePublisher, now: float, rm: int | None = 65535, aliases: int = 0
) -> None:
    bridge.step(now)
    pub.accept(rm, aliases)
    bridge.step(now)
    pub.ack_control()
    bridge.step(now)


def seqs_of(batches: list[Sent]) -> list[int]:
    return [r.seq for b in batches for r in decode(b.payload)]


def test_batch_mode_sends_the_backlog_in_batches_settled_by_one_puback(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make(
        tmp_path,
        clock,
        payload="batch",
        max_inflight=2000,
        batch_max_readings=1000,
        max_resend=2000,  # not the batch default (20 x batch_max_readings)
    )
    fill(spool, clock, 2500, age_s=OLD_S)
    connect(bridge, pub, 0.0)
    sent = pub.batches()
    assert [len(decode(b.payload)) for b in sent] == [1000, 1000]  # max_resend: 2000 readings
    assert pub.data() == []
    assert sent[0].resolved_topic == "mqttspool/edge-01/batch"
    assert (sent[0].qos, sent[0].retain) == (1, False)
    assert sent[0].properties is not None
    assert sent[0].properties.content_type == CONTENT_TYPE
    assert sent[0].properties.user_properties == (("encoding", "zlib"),)
    assert all(r.replay for r in decode(sent[0].payload))
    assert bridge.inflight == 2000
    pub.ack([sent[0].mid])
    bridge.step(0.01)  # 1000 acked readings are past the settle threshold: deleted at once
    assert spool.depth() == 1500
    assert seqs_of(pub.batches()) == list(range(1, 2501))
    pub.ack([b.mid for b in pub.batches()[1:]])
    bridge.step(0.1)
    assert spool.depth() == 0
    assert bridge.published_total == 2500


def test_a_rejected_batch_dead_letters_every_row_with_the_reason(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make(tmp_path, clock, payload="batch", max_inflight=500)
    fill(spool, clock, 300, age_s=OLD_S)
    connect(bridge, pub, 0.0)
    [batch] = pub.batches()
    pub.ack([batch.mid], 0x87, "Not authorized")
    bridge.step(0.1)  # the rejections are noted...
    bridge.step(0.2)  # ...and moved once the settle delay is up
    assert spool.depth() == 0
    dead = spool.dead_letters(1000)
    assert sorted(d.reading.seq for d in dead) == list(range(1, 301))
    assert {(d.code, d.reason) for d in dead} == {(0x87, "Not authorized")}
    assert bridge.rejected_total == 300


def test_max_resend_caps_the_readings_batches_carry(tmp_path: Path, clock: FakeClock) -> None:
    """max_resend wins over the window: readings in flight never pass it."""
    bridge, pub, spool = make(tmp_path, clock, payload="batch", max_inflight=100, max_resend=100)
    fill(spool, clock, 450, age_s=OLD_S)
    connect(bridge, pub, 0.0)
    bridge.step(0.5)
    assert [len(decode(b.payload)) for b in pub.batches()] == [100]  # not 450: max_resend
    assert bridge.inflight == 100
    pub.ack([pub.batches()[0].mid])
    bridge.step(0.6)  # the 100 acked rows are deleted and fsync'd to make room
    assert [len(decode(b.payload)) for b in pub.batches()] == [100, 100]
    assert bridge.resend_load == 100 and spool.unsynced_deletes == 0


def test_a_batch_is_one_message_against_the_window(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make(
        tmp_path, clock, payload="batch", max_inflight=2, batch_max_readings=100
    )
    fill(spool, clock, 450, age_s=OLD_S)
    connect(bridge, pub, 0.0)
    bridge.step(0.5)
    assert [len(decode(b.payload)) for b in pub.batches()] == [100, 100]  # 2 messages
    assert bridge.window_load == 2 and bridge.inflight == 200
    pub.ack([pub.batches()[0].mid])
    bridge.step(0.6)
    assert [len(decode(b.payload)) for b in pub.batches()] == [100, 100, 100]


def test_the_receive_maximum_bounds_batch_messages_not_readings(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make(
        tmp_path, clock, payload="batch", max_inflight=3000, batch_max_readings=500
    )
    fill(spool, clock, 3000, age_s=OLD_S)
    connect(bridge, pub, 0.0, rm=2)
    bridge.step(0.1)
    # Two messages in flight (the broker's limit), 500 readings each.
    assert [len(decode(b.payload)) for b in pub.batches()] == [500, 500]


def test_batch_max_bytes_splits_incompressible_batches(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make(
        tmp_path, clock, payload="batch", max_inflight=1000, batch_max_bytes=2048
    )
    fill(spool, clock, 1000, age_s=OLD_S, rng=random.Random(1))
    connect(bridge, pub, 0.0)
    sizes = [len(b.payload) for b in pub.batches()]
    assert len(sizes) > 5
    assert max(sizes) <= 2048
    assert seqs_of(pub.batches()) == list(range(1, 1001))


def test_a_single_reading_larger_than_the_bound_still_goes_alone() -> None:
    rows = [StoredReading(i, "d", "s", "m", 0.1 * i, "°C", i, True) for i in range(1, 4)]
    n, payload = encode_within(rows, "d", "e", [True] * 3, max_bytes=10)
    assert n == 1
    assert [r.seq for r in decode(payload)] == [1]


def test_live_readings_in_batch_mode_linger_then_go_together(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make(tmp_path, clock, payload="batch", batch_linger=5.0)
    fill(spool, clock, 3)
    connect(bridge, pub, 0.0)
    assert pub.batches() == []
    assert 0 < bridge.step(0.1) <= 4.9  # sleeps, but comes back by the end of the linger
    fill(spool, clock, 2)
    bridge.step(4.9)
    assert pub.batches() == []
    assert not bridge.drained
    bridge.step(5.0)
    [batch] = pub.batches()
    assert [(r.seq, r.replay) for r in decode(batch.payload)] == [(i, False) for i in range(1, 6)]


def test_mixed_sends_live_readings_alone_and_the_backlog_in_batches(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make(tmp_path, clock, payload="mixed", max_inflight=1000)
    fill(spool, clock, 40, age_s=OLD_S)
    fill(spool, clock, 3)
    fill(spool, clock, 20, age_s=OLD_S)
    connect(bridge, pub, 0.0)
    assert [(s.doc()["seq"], s.doc()["replay"]) for s in pub.data()] == [
        (41, False),
        (42, False),
        (43, False),
    ]
    batches = [[(r.seq, r.replay) for r in decode(b.payload)] for b in pub.batches()]
    assert batches == [[(i, True) for i in range(1, 41)], [(i, True) for i in range(44, 64)]]


class RecordingCompanion:
    """Records what the bridge tells a companion (Home Assistant's hook)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bool]] = []

    def on_connect(self) -> list[OutMessage]:
        return []

    def on_reading(self, row: StoredReading, replay: bool, now_us: int) -> list[OutMessage]:
        self.seen.append((row.seq, replay))
        return []


@pytest.mark.parametrize("mode", ["reading", "batch", "mixed"])
def test_companions_see_every_reading_with_its_replay_flag(
    tmp_path: Path, clock: FakeClock, mode: str
) -> None:
    ha = RecordingCompanion()
    bridge, pub, spool = make(tmp_path, clock, [ha], payload=mode, batch_linger=0)
    fill(spool, clock, 2, age_s=OLD_S)
    fill(spool, clock, 2)
    connect(bridge, pub, 0.0)
    assert sorted(ha.seen) == [(1, True), (2, True), (3, False), (4, False)]


def test_a_cut_mid_batch_resends_the_batch_after_reconnecting(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make(tmp_path, clock, payload="batch", max_inflight=600, max_resend=600)
    fill(spool, clock, 1000, age_s=OLD_S)
    connect(bridge, pub, 0.0)
    assert seqs_of(pub.batches()) == list(range(1, 601))
    pub.drop()
    bridge.step(0.1)
    assert not bridge.connected
    before = len(pub.sent)
    connect(bridge, pub, bridge.next_attempt)
    assert seqs_of(pub.batches()[1:]) == list(range(1, 601))  # not acked: sent again
    for _ in range(3):
        pub.ack([b.mid for b in pub.sent[before:] if b in pub.batches()])
        bridge.step(bridge.next_attempt + 1)
        bridge.step(bridge.next_attempt + 2)
    assert spool.depth() == 0


def test_topic_aliases_first_come_first_served_and_reset_on_reconnect(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make(tmp_path, clock, max_inflight=100)
    fill(spool, clock, 6, streams=3)  # m0 m1 m2 m0 m1 m2
    connect(bridge, pub, 0.0, aliases=2)
    wire = [(s.topic, s.properties.topic_alias if s.properties else None) for s in pub.data()]
    t = "mqttspool/edge-01/sim/"
    assert wire == [
        (t + "m0", 1),
        (t + "m1", 2),
        (t + "m2", None),  # out of aliases: the topic in full
        ("", 1),
        ("", 2),
        (t + "m2", None),
    ]
    assert [s.resolved_topic for s in pub.data()] == [t + f"m{i % 3}" for i in range(6)]
    pub.drop()
    bridge.step(0.1)
    connect(bridge, pub, bridge.next_attempt, aliases=2)
    again = pub.data()[6:]
    assert (again[0].topic, again[0].properties) is not None
    assert [(s.topic, s.properties.topic_alias if s.properties else None) for s in again[:2]] == [
        (t + "m0", 1),  # a new connection: the alias is announced again
        (t + "m1", 2),
    ]


def test_no_aliases_when_the_broker_grants_none(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make(tmp_path, clock)
    fill(spool, clock, 3)
    connect(bridge, pub, 0.0, aliases=0)
    assert [(s.topic, s.properties) for s in pub.data()] == [("mqttspool/edge-01/sim/m0", None)] * 3


def test_a_due_batch_blocked_by_the_receive_maximum_does_not_spin(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make(tmp_path, clock, payload="batch", max_inflight=20, batch_linger=1)
    connect(bridge, pub, 0.0, rm=1)
    for t in (0.01, 0.02, 0.03):  # the connect messages, one at a time (Receive Maximum 1)
        pub.ack_control()
        bridge.step(t)
    fill(spool, clock, 8, age_s=OLD_S)
    bridge.step(0.1)
    assert [len(decode(b.payload)) for b in pub.batches()] == [8]
    fill(spool, clock, 2)  # fresh: they linger, then wait for the one message slot
    bridge.step(0.2)
    assert bridge.step(5.0) > 0  # due but blocked: wait for an event, no busy loop
    assert len(pub.batches()) == 1
    pub.ack([pub.batches()[0].mid])
    bridge.step(5.1)
    assert [len(decode(b.payload)) for b in pub.batches()] == [8, 2]


def test_a_backlog_is_leased_one_batch_at_a_time_and_each_batch_leaves_before_the_next_lease(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A long backlog is not read all at once before the first batch goes out (that
    kept a slow link idle while 20,000 rows were read): lease, send, lease, send."""
    bridge, pub, spool = make(
        tmp_path, clock, payload="batch", max_inflight=100, batch_max_readings=500
    )
    fill(spool, clock, 2200, age_s=OLD_S)
    events: list[str] = []
    lease = bridge.source.lease

    def leasing(n: int, now: float) -> list[Any]:
        rows = lease(n, now)
        events.append(f"lease {n}: {len(rows)}")
        return rows

    publish = pub.publish

    def publishing(*args: Any, **kwargs: Any) -> int | None:
        events.append("batch" if str(args[0]).endswith("/batch") else "control")
        return publish(*args, **kwargs)

    bridge.source.lease = leasing  # type: ignore[method-assign]
    pub.publish = publishing  # type: ignore[method-assign]
    connect(bridge, pub, 0.0)
    data = [e for e in events if e != "control" and not e.endswith(": 0")]  # nothing left
    assert data == [
        "lease 500: 500",
        "batch",
        "lease 500: 500",
        "batch",
        "lease 500: 500",
        "batch",
        "lease 500: 500",
        "batch",
        "lease 500: 200",
        "batch",
    ]
    assert seqs_of(pub.batches()) == list(range(1, 2201))
    assert bridge.inflight == 2200  # all of it in flight: max_resend is 20 x 500
