"""Each part of the bridge alone: Window, Settler, Outbox, Link, RowSource, the senders.

The parts get a fake clock, a fake publisher and (where they write) a real
spool in ``tmp_path``; no Bridge is built here.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytest
from fakes.clock import FakeClock
from fakes.publisher import FakePublisher

from mqttspool.batch import decode
from mqttspool.bridge import (
    BatchSender,
    DeadLetterLog,
    Link,
    Outbox,
    OutMessage,
    ReadingSender,
    RowSource,
    Session,
    Settler,
    TokenBucket,
    Window,
)
from mqttspool.bridge.senders import SendContext
from mqttspool.config import Settings, load_config
from mqttspool.counters import MESSAGES_PUBLISHED, Counters
from mqttspool.gate import ConsumerGate
from mqttspool.logthrottle import LogThrottle
from mqttspool.mqtt import Connected, Disconnected, FailureKind
from mqttspool.reading import Reading, from_us
from mqttspool.spool import Spool, open_spool

OLD_S = 3 * 86_400


def settings(tmp_path: Path, **bridge: Any) -> Settings:
    cfg = load_config(None, environ={})
    cfg.spool.path, cfg.spool.min_free_bytes, cfg.device.id = str(tmp_path / "s.db"), 0, "edge-01"
    for key, value in bridge.items():
        setattr(cfg.bridge, key, value)
    return cfg


def fill(spool: Spool, clock: FakeClock, n: int, age_s: float = 0.0) -> list[int]:
    ts = from_us(clock.wall_us() - int(age_s * 1_000_000))
    rows = [
        Reading(device="edge-01", sensor="s", metric="m", value=float(i), ts=ts) for i in range(n)
    ]
    return spool.append(rows).seqs


def throttle() -> LogThrottle:
    return LogThrottle(30.0, clock=lambda: 0.0)


def settler_for(spool: Spool, max_resend: int = 100, **kw: Any) -> Settler:
    return Settler(
        spool,
        max_resend=max_resend,
        settle_interval=kw.get("settle_interval", 5.0),
        settle_delay=kw.get("settle_delay", 0.05),
        counters=kw.get("counters", Counters()),
        dead_letters=DeadLetterLog("fake:1883", throttle()),
        throttle=throttle(),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool(tmp_path: Path, clock: FakeClock) -> Any:
    s = open_spool(settings(tmp_path).spool, clock)
    yield s
    s.close()


# ----------------------------------------------------------------- Window


def test_the_window_counts_messages_and_carries_their_readings() -> None:
    window = Window(3)
    window.add(1, 10.0)  # a status message
    window.add(2, 11.0, (5, 6, 7))  # a batch of three readings: one message
    window.add(3, 12.0, (8,))
    assert (window.load(), window.room(), window.readings) == (3, 0, 4)
    assert window.oldest() == 10.0 and window.reading_mids() == [2, 3]
    assert window.ack(2) == (5, 6, 7)
    assert window.ack(1) == () and window.ack(99) == ()
    assert (window.load(), window.readings, window.oldest()) == (1, 1, 12.0)
    assert window.holds(3) and not window.holds(2)


# ----------------------------------------------------------------- Settler


def test_the_settler_deletes_cheaply_and_fsyncs_only_for_room(
    spool: Spool, clock: FakeClock
) -> None:
    counters = Counters()
    settler = settler_for(spool, max_resend=100, counters=counters)
    seqs = fill(spool, clock, 120)
    settler.on_ack(tuple(seqs[:60]), 0, "Success", now=0.0)
    assert settler.load(in_flight=40) == 100 and settler.fits(40) == 0
    settler.step(0.01)  # 60 >= ack_batch (max(32, 100 // 4) = 32): deleted now
    assert spool.depth() == 60 and spool.unsynced_deletes == 60
    assert settler.load(40) == 100  # deleted but not fsync'd: a power cut brings them back
    assert settler.room(40, wanted=10, now=0.02) == 60  # fsync'd to make room
    assert spool.unsynced_deletes == 0 and counters.counter(MESSAGES_PUBLISHED) == 60


def test_the_settler_fsyncs_unsynced_deletes_within_the_settle_interval(
    spool: Spool, clock: FakeClock
) -> None:
    settler = settler_for(spool, max_resend=1000, settle_interval=5.0)
    seqs = fill(spool, clock, 3)
    settler.on_ack(tuple(seqs), 0, "Success", now=1.0)
    assert settler.next_due(1.0) == pytest.approx(1.05)  # the settle delay
    settler.step(1.05)
    assert spool.unsynced_deletes == 3
    assert settler.next_due(1.1) == pytest.approx(6.05)  # the settle interval
    settler.step(6.0)
    assert spool.unsynced_deletes == 3
    settler.step(6.05)
    assert spool.unsynced_deletes == 0 and settler.next_due(6.1) is None


def test_the_settler_dead_letters_rejections_and_logs_once_per_reason(
    spool: Spool, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    settler = settler_for(spool)
    seqs = fill(spool, clock, 4)
    settler.on_ack(tuple(seqs), 0x87, "Not authorized", now=0.0)
    with caplog.at_level(logging.WARNING, logger="mqttspool.bridge"):
        settler.settle(0.0)
    assert spool.depth() == 0 and len(spool.dead_letters()) == 4
    assert settler.rejected_total == 4 and settler.published_total == 0
    (line,) = [r.getMessage() for r in caplog.records]
    assert "rejected 4 reading(s) with reason 0x87 Not authorized (seqs 1..4)" in line


# ----------------------------------------------------------------- Outbox


def test_the_outbox_sends_online_first_waits_for_room_and_keeps_one_retained_per_topic() -> None:
    pub = FakePublisher()
    pub.connect()
    pub.accept()
    outbox = Outbox("p", "d", lambda: {"depth": 0})
    outbox.send(OutMessage("p/d/spool", b"old"))
    outbox.on_connect(now=0.0)
    assert [m.topic for m in outbox.queue] == ["p/d/status", "p/d/spool"]  # one snapshot
    window = Window(1)
    assert outbox.flush(pub, window, 0.0) is False  # one slot: status only
    assert [s.payload for s in pub.sent] == [b"online"]
    window.ack(pub.sent[0].mid)
    assert outbox.flush(pub, window, 0.0) is True
    assert pub.sent[-1].payload == b'{"depth":0}'
    assert outbox.next_snapshot == 60.0
    pub.refuse_publish = True
    outbox.step(60.0)
    assert outbox.flush(pub, Window(5), 60.0) is None  # refused: the connection is gone


# ----------------------------------------------------------------- Link


def test_the_link_backs_off_logs_and_reports_every_session_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pub = FakePublisher()
    downs: list[int] = []
    cfg = settings(tmp_path, reconnect_min=1.0, reconnect_max=4.0, max_inflight=50)
    link = Link(pub, cfg, throttle(), lambda: downs.append(1), lambda: 7, random.Random(1))
    link.start_attempt(0.0)
    session = link.session
    assert session is not None and not link.connected
    assert link.due(0.0) == pytest.approx(link.attempt_timeout + 0.05)
    assert link.connect_overdue(session, link.attempt_timeout + 0.1)
    with caplog.at_level(logging.INFO, logger="mqttspool.bridge"):
        link.failed(1.0, FailureKind.NETWORK, "refused")
        assert link.session is None and downs == [1] and 2.0 <= link.next_attempt <= 5.0
        link.start_attempt(link.next_attempt)
        session = link.session
        assert session is not None
        link.on_connected(session, Connected(session.generation, 20, 0))
        assert link.connected and session.window.size == 20
        link.lost(Disconnected(session.generation, FailureKind.NETWORK, "cut"), 9.0, 3)
    lines = [r.getMessage() for r in caplog.records]
    assert "unreachable: refused; 7 reading(s) spooled" in lines[0]
    assert "window 20 (bridge.max_inflight 50, broker Receive Maximum 20)" in lines[1]
    assert "lost connection to broker fake:1883: cut; 3 reading(s) in flight" in lines[2]
    assert downs == [1, 1] and not link.connected


# ----------------------------------------------------------------- RowSource


def test_the_row_source_leases_behind_the_gate_and_queries_only_when_rows_may_be_there(
    spool: Spool, clock: FakeClock
) -> None:
    gate = ConsumerGate(require_subscribers=False, consumer_topic="c/state", probe_after=60)
    changes: list[float] = []
    source = RowSource(spool, gate, changes.append)
    fill(spool, clock, 3)
    assert source.gated(10, 0, now=0.0) == 0  # no consumer state yet: hold readings
    gate.on_consumer_state(True)
    assert source.gated(10, 0, now=1.0) == 10 and changes == [1.0]
    assert [r.seq for r in source.lease(10, 1.0)] == [1, 2, 3] and source.found
    assert source.watch.known_empty()
    assert source.lease(10, 1.1) == [] and source.found is False
    fill(spool, clock, 1)  # a commit of this process: leased at once
    assert not source.watch.known_empty()
    assert [r.seq for r in source.lease(10, 1.2)] == [4]
    source.restart()
    assert [r.seq for r in source.lease(10, 1.3)] == [1, 2, 3, 4]


# ----------------------------------------------------------------- senders


def shared(pub: FakePublisher, spool: Spool, clock: FakeClock, settler: Settler) -> SendContext:
    gate = ConsumerGate(require_subscribers=False, consumer_topic="", probe_after=60)
    source = RowSource(spool, gate, lambda now: None)
    outbox = Outbox("p", "edge-01", lambda: {})
    return SendContext(pub, spool, source, settler, outbox, TokenBucket(0), clock, 60.0)


def connected_session(pub: FakePublisher, window: int) -> Session:
    pub.connect()
    pub.accept()
    return Session(pub.generation, 0.0, connected=True, window=Window(window))


def test_the_reading_sender_fills_the_window_within_max_resend(
    spool: Spool, clock: FakeClock
) -> None:
    pub = FakePublisher()
    settler = settler_for(spool, max_resend=5)
    sender = ReadingSender(shared(pub, spool, clock, settler), "p")
    session = connected_session(pub, window=20)
    fill(spool, clock, 12)
    assert sender.fill(session, 0.0)
    assert [s.doc()["seq"] for s in pub.data()] == [1, 2, 3, 4, 5]  # max_resend, not 20
    assert pub.data()[0].resolved_topic == "p/edge-01/s/m"
    assert session.window.readings == 5 and sender.next_due(session, 0.0) is None
    for mid in session.window.reading_mids():
        settler.on_ack(session.window.ack(mid), 0, "Success", 0.0)
    assert sender.fill(session, 0.1)  # the acks are deleted and fsync'd to make room
    assert len(pub.data()) == 10 and spool.unsynced_deletes == 0
    pub.refuse_publish = True
    assert settler.room(5, 1, 0.2) == 0 and sender.fill(session, 0.2)  # no room: no publish
    assert pub.data()[-1].doc()["seq"] == 10


def test_the_batch_sender_sends_one_message_cut_to_max_resend(
    spool: Spool, clock: FakeClock
) -> None:
    pub = FakePublisher()
    settler = settler_for(spool, max_resend=150)
    s = shared(pub, spool, clock, settler)
    sender = BatchSender(s, "p", max_readings=100, max_bytes=65536, linger=10.0)
    session = connected_session(pub, window=20)
    fill(spool, clock, 400, age_s=OLD_S)
    assert sender.fill(session, 0.0)
    assert [len(decode(b.payload)) for b in pub.batches()] == [100, 50]  # 150 = max_resend
    assert session.window.load() == 2 and session.window.readings == 150
    assert sender.waiting == 0


def test_a_live_batch_lingers_and_mixed_sends_live_readings_alone(
    spool: Spool, clock: FakeClock
) -> None:
    pub = FakePublisher()
    settler = settler_for(spool, max_resend=1000)
    s = shared(pub, spool, clock, settler)
    live = ReadingSender(s, "p")
    batch = BatchSender(s, "p", max_readings=100, max_bytes=65536, linger=10.0)
    session = connected_session(pub, window=20)
    fill(spool, clock, 3)  # live
    assert batch.fill(session, 0.0) and pub.batches() == [] and batch.waiting == 3
    assert batch.fill(session, 9.9) and pub.batches() == []  # lingering up to 10 s
    assert batch.fill(session, 10.0) and [len(decode(b.payload)) for b in pub.batches()] == [3]
    mixed = BatchSender(s, "p", max_readings=100, max_bytes=65536, linger=10.0, live=live)
    s.source.restart()
    fill(spool, clock, 2)
    assert mixed.fill(session, 11.0)
    assert [d.doc()["seq"] for d in pub.data()][-2:] == [4, 5]  # alone, not lingering
