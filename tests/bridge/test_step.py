"""Bridge.step driven with a fake clock and a fake publisher: window, batching, reason codes,
backoff, replay flag, rate limit, live-first, snapshot, shutdown."""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import pytest
from fakes.clock import FakeClock, FakeClockSync
from fakes.publisher import FakePublisher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.spooltools import all_seqs

from mqttspool.bridge import ACK_FLUSH_S, Backoff, Bridge, TokenBucket, build_bridge
from mqttspool.config import Settings, load_config
from mqttspool.counters import Counters
from mqttspool.errors import ConfigError
from mqttspool.mqtt import Acked, FailureKind
from mqttspool.reading import Reading, from_us
from mqttspool.sampler import build_sampler
from mqttspool.spool import Spool, open_spool


def make_settings(tmp_path: Path, **bridge: Any) -> Settings:
    cfg = load_config(None, environ={})
    cfg.spool.path = str(tmp_path / "spool.db")
    cfg.device.id = "edge-01"
    for key, value in bridge.items():
        setattr(cfg.bridge, key, value)
    return cfg


def fill(spool: Spool, clock: FakeClock, n: int, age_s: float = 0.0) -> list[int]:
    ts = from_us(clock.wall_us() - int(age_s * 1_000_000))
    readings = [
        Reading(device="edge-01", sensor="sim", metric="t", value=float(i), ts=ts) for i in range(n)
    ]
    return spool.append(readings).seqs


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_bridge(
    tmp_path: Path, clock: FakeClock, **bridge: Any
) -> tuple[Bridge, FakePublisher, Spool]:
    cfg = make_settings(tmp_path, **bridge)
    spool = open_spool(cfg.spool, clock)
    pub = FakePublisher()
    return build_bridge(cfg, spool, pub, clock, rng=random.Random(7)), pub, spool


def reading_mids(bridge: Bridge) -> list[int]:
    """The mids of the messages in flight that carry readings, oldest first."""
    session = bridge.link.session
    return [] if session is None else session.window.reading_mids()


def connect(bridge: Bridge, pub: FakePublisher, now: float, rm: int | None = 65535) -> None:
    """Connect, and acknowledge the control messages sent on connect (they take window slots)."""
    bridge.step(now)  # starts the attempt
    pub.accept(rm)
    bridge.step(now)
    pub.ack_control()
    bridge.step(now)


def test_window_is_filled_in_seq_order_and_refilled_after_acks(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=10)
    fill(spool, clock, 25)
    connect(bridge, pub, 0.0)
    assert [s.doc()["seq"] for s in pub.data()] == list(range(1, 11))
    bridge.step(0.01)
    assert len(pub.data()) == 10  # window full: nothing more
    pub.ack([s.mid for s in pub.data()[:4]])
    bridge.step(0.02)  # the four acks still count against the window until deleted
    bridge.step(0.1)  # flush interval passed: deleted, window refilled
    assert [s.doc()["seq"] for s in pub.data()] == list(range(1, 15))
    assert all_seqs(spool) == list(range(5, 26))


def test_window_is_capped_by_receive_maximum(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=500)
    fill(spool, clock, 50)
    connect(bridge, pub, 0.0, rm=20)
    assert len(pub.data()) == 20
    assert bridge.link.session is not None and bridge.link.session.window.size == 20


def test_mqtt311_has_no_receive_maximum(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=30)
    fill(spool, clock, 50)
    connect(bridge, pub, 0.0, rm=None)
    assert len(pub.data()) == 30


def test_acks_are_deleted_in_batches(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=100)
    fill(spool, clock, 100)
    calls: list[int] = []
    real = spool.settle

    def counting(acked: Any, rejected: Any = (), durable: bool = False) -> None:
        acked = list(acked)
        calls.append(len(acked))
        real(acked, rejected, durable)

    monkeypatch.setattr(spool, "settle", counting)
    connect(bridge, pub, 0.0)
    pub.ack_all_data()
    bridge.step(0.001)
    assert calls == []  # the acks wait for more, up to the settle delay
    bridge.step(0.001 + bridge.settle_delay)
    assert calls == [100]  # one transaction for the batch, not one per message
    assert spool.depth() == 0
    assert bridge.published_total == 100


def test_reason_codes(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=10)
    fill(spool, clock, 4)
    connect(bridge, pub, 0.0)
    mids = [s.mid for s in pub.data()]
    pub.ack([mids[0]], 0x00, "Success")
    pub.ack([mids[1]], 0x10, "No matching subscribers")
    pub.ack([mids[2]], 0x87, "Not authorized")
    pub.ack([mids[3]], 0x97, "Quota exceeded")
    bridge.step(0.2)
    assert spool.depth() == 4  # acks are batched for up to 50 ms before the delete
    bridge.step(0.26)
    assert spool.depth() == 0
    letters = {d.reading.seq: (d.code, d.reason) for d in spool.dead_letters()}
    assert letters == {3: (0x87, "Not authorized"), 4: (0x97, "Quota exceeded")}
    assert bridge.published_total == 2
    assert bridge.rejected_total == 2


def test_rejection_does_not_block_the_rest(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=2)
    fill(spool, clock, 6)
    connect(bridge, pub, 0.0)
    now = 0.0
    for _ in range(10):
        data = pub.data()
        for s in data[-2:]:
            code = 0x87 if s.doc()["seq"] == 1 else 0
            pub.ack([s.mid], code, "Not authorized" if code else "Success")
        now += 0.1
        bridge.step(now)
    assert spool.depth() == 0
    assert [d.reading.seq for d in spool.dead_letters()] == [1]
    assert sorted(s.doc()["seq"] for s in pub.data()) == [1, 2, 3, 4, 5, 6]


def test_disconnect_resends_unacked_from_oldest_with_backoff(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=5, reconnect_min=1.0)
    fill(spool, clock, 8)
    connect(bridge, pub, 0.0)
    first = pub.data()
    pub.ack([first[0].mid, first[1].mid])
    pub.drop(FailureKind.NETWORK, "Unspecified error", 128)
    bridge.step(0.01)
    assert not bridge.connected
    assert pub.closes == 1
    assert all_seqs(spool) == [3, 4, 5, 6, 7, 8]  # acks before the cut were applied
    wait_s = bridge.next_attempt - 0.01
    assert 1.0 <= wait_s <= 1.0 + 1e-9  # first delay: reconnect_min
    bridge.step(0.5)
    assert pub.generation == 1  # still waiting out the backoff
    pub.sent.clear()
    connect(bridge, pub, bridge.next_attempt)
    assert [s.doc()["seq"] for s in pub.data()] == [3, 4, 5, 6, 7]


def test_stale_events_of_an_old_connection_are_ignored(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=5)
    fill(spool, clock, 3)
    connect(bridge, pub, 0.0)
    old_gen = pub.generation
    old_mids = [s.mid for s in pub.data()]
    pub.drop()
    bridge.step(0.0)
    connect(bridge, pub, bridge.next_attempt)
    pub.pending.extend(Acked(old_gen, m, 0, "Success") for m in old_mids)
    bridge.step(bridge.next_attempt + 1)
    assert spool.depth() == 3  # acks of the old client did not delete the resent rows


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    b = Backoff(1.0, 8.0, random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    caps = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(1.0 <= d <= c for d, c in zip(delays, caps, strict=True))
    assert len({round(d, 6) for d in delays}) > 4  # jittered, not a fixed ladder
    b.reset()
    assert b.next_delay() == 1.0


def test_connect_failures_back_off_and_keep_rows(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, reconnect_min=1.0, reconnect_max=4.0)
    fill(spool, clock, 3)
    now = 0.0
    attempts: list[float] = []
    for _ in range(6):
        bridge.step(now)
        attempts.append(now)
        pub.fail(FailureKind.NETWORK, "connection refused")
        bridge.step(now)
        now = bridge.next_attempt
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(1.0 <= g <= 4.0 for g in gaps)
    assert pub.generation == 6
    assert spool.depth() == 3
    assert pub.sent == []


def test_connect_timeout_counts_as_failure(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, _ = make_bridge(tmp_path, clock)
    bridge.step(0.0)
    assert bridge.link.session is not None
    bridge.step(31.0)  # no CONNACK within max(10, keepalive=30)
    assert bridge.link.session is None
    assert pub.closes == 1


def test_replay_flag_follows_live_window(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, live_window=60)
    fill(spool, clock, 1, age_s=3600)
    fill(spool, clock, 1, age_s=10)
    connect(bridge, pub, 0.0)
    assert [s.doc()["replay"] for s in pub.data()] == [True, False]


def test_payload_and_topic(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock)
    fill(spool, clock, 1)
    connect(bridge, pub, 0.0)
    (msg,) = pub.data()
    assert msg.topic == "mqttspool/edge-01/sim/t"
    assert msg.qos == 1 and msg.retain is False
    assert msg.doc()["id"] == f"edge-01:{spool.epoch}:1"


def test_status_and_snapshot_on_connect_and_every_minute(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, ack_timeout=3600)
    fill(spool, clock, 2)
    connect(bridge, pub, 100.0)
    control = [(s.topic, s.retain) for s in pub.sent if not s.payload.startswith(b'{"id"')]
    assert control == [("mqttspool/edge-01/status", True), ("mqttspool/edge-01/spool", True)]
    snap = json.loads(pub.sent[1].payload)
    assert snap["depth"] == 2 and snap["device"] == "edge-01" and snap["epoch"] == spool.epoch
    bridge.step(159.0)
    assert sum(s.topic.endswith("/spool") for s in pub.sent) == 1
    bridge.step(160.0)
    assert sum(s.topic.endswith("/spool") for s in pub.sent) == 2


def test_max_rate_limits_messages_per_second(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_rate=10, max_inflight=1000)
    fill(spool, clock, 100)
    connect(bridge, pub, 0.0)
    assert len(pub.data()) == 10  # initial burst = one second's worth
    t = 0.0
    for _ in range(20):
        t += 0.1
        pub.ack_all_data()
        bridge.step(t)
    assert 28 <= len(pub.data()) <= 31  # 10 + 2 s × 10/s


def test_token_bucket_unlimited_and_refill() -> None:
    assert TokenBucket(0).take(1000, 0.0) == 1000
    bucket = TokenBucket(5)
    assert bucket.take(10, 0.0) == 5
    assert bucket.take(10, 0.1) == 0
    assert bucket.take(10, 1.1) == 5


def test_live_first_sends_new_rows_ahead_of_backlog(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=3, live_first=True)
    fill(spool, clock, 6, age_s=7200)  # backlog: seqs 1..6
    connect(bridge, pub, 0.0)
    assert [s.doc()["seq"] for s in pub.data()] == [1, 2, 3]
    fill(spool, clock, 2)  # fresh: seqs 7, 8
    pub.ack_all_data()
    bridge.step(0.2)
    assert [s.doc()["seq"] for s in pub.data()][3:] == [7, 8, 4]
    for i in range(5):
        pub.ack_all_data()
        bridge.step(0.4 + i * 0.2)
    assert sorted(s.doc()["seq"] for s in pub.data()) == list(range(1, 9))
    assert spool.depth() == 0


def test_publish_refused_mid_window_reconnects_without_duplicates(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=5)
    fill(spool, clock, 5)
    bridge.step(0.0)
    pub.accept()
    pub.refuse_publish = True
    bridge.step(0.0)
    assert not bridge.connected
    pub.refuse_publish = False
    connect(bridge, pub, bridge.next_attempt)
    assert [s.doc()["seq"] for s in pub.data()] == [1, 2, 3, 4, 5]


def test_shutdown_waits_for_acks_then_says_offline(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=5)
    fill(spool, clock, 3)
    connect(bridge, pub, 0.0)
    t = [0.0]

    def now() -> float:
        return t[0]

    def wait(s: float) -> None:
        t[0] += s
        if t[0] > 0.3 and spool.depth() != 0:
            pub.ack_all_data()
        offline = [m for m in pub.sent if m.payload == b"offline"]
        if offline:
            pub.ack([offline[0].mid])

    left = bridge.shutdown(5.0, now, wait)
    assert left == 0
    assert spool.depth() == 0
    assert pub.sent[-1].topic == "mqttspool/edge-01/status"
    assert pub.sent[-1].payload == b"offline" and pub.sent[-1].retain
    assert pub.closes == 1


def test_shutdown_sleeps_until_the_publisher_wakes_it_not_in_short_polls(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=5)
    fill(spool, clock, 3)
    connect(bridge, pub, 0.0)
    t = [0.0]
    waits: list[float] = []

    def wait(s: float) -> None:  # every wait is ended early by the PUBACK it waits for
        waits.append(s)
        t[0] += 0.01
        pub.ack_all_data()
        pub.ack([m.mid for m in pub.sent if m.payload == b"offline"])

    assert bridge.shutdown(5.0, lambda: t[0], wait) == 0
    assert len(waits) == 2  # one for the readings' PUBACKs, one for offline's
    assert waits[0] > ACK_FLUSH_S  # until the bridge's next timer, not a 50 ms poll
    assert waits[1] == pytest.approx(5.0 - 0.01)  # until the deadline


def test_shutdown_timeout_leaves_unacked_rows_spooled(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=5)
    fill(spool, clock, 3)
    connect(bridge, pub, 0.0)
    t = [0.0]

    def wait(s: float) -> None:
        t[0] += s

    left = bridge.shutdown(1.0, lambda: t[0], wait)
    assert left == 3
    assert spool.depth() == 3


def test_shutdown_with_the_window_full_still_says_offline_at_qos_0(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=3)
    fill(spool, clock, 5)
    connect(bridge, pub, 0.0)
    t = [0.0]

    def wait(s: float) -> None:
        t[0] += s
        offline = [m for m in pub.sent if m.payload == b"offline"]
        if offline:
            pub.ack([offline[0].mid])

    left = bridge.shutdown(0.5, lambda: t[0], wait)  # the broker never acks the readings
    assert left == 3
    offline = [m for m in pub.sent if m.topic == "mqttspool/edge-01/status"]
    assert [(m.payload, m.qos, m.retain) for m in offline][-1] == (b"offline", 0, True)


# ---------------------------------------------------------------- property


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[str, int]]:
    ops = st.one_of(
        st.tuples(st.just("ack"), st.sampled_from([0x00, 0x10, 0x87, 0x97])),
        st.tuples(st.just("cut"), st.just(0)),
        st.tuples(st.just("append"), st.integers(1, 5)),
        st.tuples(st.just("tick"), st.just(0)),
    )
    return draw(st.lists(ops, min_size=1, max_size=40))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=scripts())
def test_every_accepted_seq_is_delivered_dead_lettered_or_dropped(
    tmp_path_factory: pytest.TempPathFactory, script: list[tuple[str, int]]
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    clock = FakeClock()
    cfg = make_settings(tmp, max_inflight=4)
    cfg.spool.max_rows = 12
    spool = open_spool(cfg.spool, clock)
    pub = FakePublisher()
    bridge = build_bridge(cfg, spool, pub, clock, rng=random.Random(0))
    accepted: set[int] = set()
    acked: set[int] = set()
    now = 0.0
    by_mid: dict[int, int] = {}

    def pump() -> None:
        nonlocal now
        now += 0.1
        bridge.step(now)
        if bridge.link.session is None and now >= bridge.next_attempt:
            bridge.step(now)
        if bridge.link.session is not None and not bridge.connected:
            pub.accept(4)
            bridge.step(now)
        for s in pub.data():
            by_mid[s.mid] = s.doc()["seq"]

    for op, arg in script:
        if op == "append":
            accepted.update(fill(spool, clock, arg))
        elif (
            op == "ack"
            and bridge.link.session is not None
            and bridge.link.session.window.reading_mids()
        ):
            mid = bridge.link.session.window.reading_mids()[0]
            if arg < 0x80:
                acked.add(by_mid[mid])
            pub.ack([mid], arg, "reason")
        elif op == "cut" and bridge.connected:
            pub.drop()
        pump()
    for _ in range(200):  # drain everything, acknowledging with success
        for mid in reading_mids(bridge):
            acked.add(by_mid[mid])
            pub.ack([mid])
        pump()
        if spool.depth() == 0 and bridge.unsettled == 0:
            break
    dead = {d.reading.seq for d in spool.dead_letters()}
    stats = spool.stats()
    assert spool.depth() == 0
    unaccounted = accepted - acked - dead
    # A row dropped by max_rows may still have been in flight (and acked), so the drop
    # counter can exceed what is missing, never the other way round.
    assert len(unaccounted) <= stats.dropped.get("max_rows", 0)
    if not stats.dropped:
        assert unaccounted == set()
    spool.close()


# ------------------------------------------------------------ rate, backoff


def test_rate_below_one_per_second_publishes_at_that_rate(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_rate=0.2, max_inflight=100)
    fill(spool, clock, 100)
    connect(bridge, pub, 0.0)
    t = 0.0
    while t < 100.0:
        pub.ack_all_data()
        t = round(t + 0.25, 2)
        bridge.step(t)
    assert 19 <= len(pub.data()) <= 21  # 0.2/s × 100 s


def test_high_rate_is_unchanged_by_the_minimum_burst(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_rate=1000, max_inflight=5000)
    fill(spool, clock, 3000)
    connect(bridge, pub, 0.0)
    assert len(pub.data()) == 1000  # initial burst = one second's worth
    pub.ack_all_data()
    bridge.step(0.5)
    pub.ack_all_data()
    bridge.step(1.0)
    assert len(pub.data()) == 2000


def test_token_bucket_below_one_token_per_second() -> None:
    bucket = TokenBucket(0.5)
    assert bucket.take(10, 0.0) == 1  # burst of one whole token
    assert bucket.take(10, 1.0) == 0
    assert bucket.wait_for_one() == pytest.approx(1.0)
    assert bucket.take(10, 2.0) == 1


def test_backoff_survives_thousands_of_failures_with_float_minimum() -> None:
    b = Backoff(0.5, 60.0, random.Random(3))
    delays = [b.next_delay() for _ in range(5000)]
    assert all(0.5 <= d <= 60.0 for d in delays)


def test_a_month_of_outage_costs_nothing_but_disk(tmp_path: Path, clock: FakeClock) -> None:
    """The bridge fails to connect for 30 simulated days; the real sampler keeps storing."""
    cfg = load_config(
        None,
        environ={
            "MQTTSPOOL_SENSORS": '[{"type": "simulated", "name": "sim", "interval": 3600}]',
            "MQTTSPOOL_BRIDGE__RECONNECT_MIN": "0.5",  # a float, as in the shipped config
            "MQTTSPOOL_BRIDGE__RECONNECT_MAX": "300",
        },
    )
    cfg.spool.path = str(tmp_path / "spool.db")
    spool = open_spool(cfg.spool, clock)
    pub = FakePublisher()
    bridge = build_bridge(cfg, spool, pub, clock, rng=random.Random(7))
    sampler = build_sampler(cfg, spool, Counters(), clock, FakeClockSync(True))
    now, attempts, gaps = 0.0, 0, []
    while now < 30 * 86400.0:
        if sampler.seconds_until_due() == 0:
            sampler.step()
        bridge.step(now)
        attempts += 1
        pub.fail(FailureKind.NETWORK, "connection refused")
        bridge.step(now)
        gaps.append(bridge.next_attempt - now)
        clock.advance(gaps[-1])
        now = bridge.next_attempt
    assert attempts > 1025 * 5  # far past the ~1025 failures that used to overflow
    assert all(0.5 <= g <= 300.0 for g in gaps)
    assert 719 <= sampler.rounds <= 721  # one round an hour, none lost to the outage
    assert spool.depth() == 2 * sampler.rounds  # temperature and humidity each round
    assert pub.sent == []


# --------------------------------------------------- failure kinds, log throttle


def bridge_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mqttspool.bridge" and text in r.getMessage()]


def test_flapping_link_logs_a_bounded_number_of_lines_carrying_counts(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, reconnect_min=0.1, reconnect_max=0.5)
    fill(spool, clock, 3)
    now = 0.0
    with caplog.at_level(logging.INFO, logger="mqttspool.bridge"):
        for _ in range(100):
            connect(bridge, pub, now)
            pub.drop(FailureKind.NETWORK, "Unspecified error", 0x80)
            bridge.step(now + 0.05)
            now = bridge.next_attempt
    assert now < 60.0  # 100 flaps within a minute
    lost = bridge_lines(caplog, "lost connection to broker fake:1883")
    connected = bridge_lines(caplog, "connected to broker fake:1883")
    assert 1 <= len(lost) <= 3 and 1 <= len(connected) <= 3
    counts = [
        int(m.group(1)) if (m := re.search(r"\((\d+) disconnects\)", r.getMessage())) else 1
        for r in lost
    ]
    assert counts[0] == 1 and all(c > 1 for c in counts[1:])
    assert all("client id 'mqttspool-edge-01'" in r.getMessage() for r in lost[1:])
    assert sum(counts) + bridge.parts.throttle.flush(("lost", FailureKind.NETWORK)) == 100


def test_connect_failures_are_throttled_per_kind(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    bridge, pub, _ = make_bridge(tmp_path, clock, reconnect_min=0.1, reconnect_max=0.2)
    now = 0.0
    with caplog.at_level(logging.INFO, logger="mqttspool.bridge"):
        i = 0
        while now < 31.0:  # just past one throttle interval
            i += 1
            bridge.step(now)
            if i % 2:
                pub.fail(FailureKind.NETWORK, "connection refused")
            else:
                pub.fail(FailureKind.TIMEOUT, "connection timed out")
            bridge.step(now)
            now = bridge.next_attempt
    lines = [r.getMessage() for r in bridge_lines(caplog, "unreachable")]
    assert i > 100
    assert [line.split(": ")[1].split(";")[0] for line in lines[:2]] == [
        "connection refused",
        "connection timed out",
    ]
    assert len(lines) == 4  # two kinds, one line each per 30 s
    assert all(re.search(r" \(\d+ attempts\);", line) for line in lines[2:])


@pytest.mark.parametrize(
    ("kind", "reason", "level", "hint"),
    [
        (FailureKind.NOT_AUTHORIZED, "connection refused: Not authorized", "ERROR", "username"),
        (FailureKind.TLS, "TLS certificate check failed", "ERROR", "broker.tls"),
        (FailureKind.NETWORK, "connection refused", "WARNING", None),
        (FailureKind.REFUSED, "connection refused: Server busy", "WARNING", None),
    ],
)
def test_every_failure_kind_is_retried_configuration_ones_logged_as_errors(
    tmp_path: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    kind: FailureKind,
    reason: str,
    level: str,
    hint: str | None,
) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, reconnect_min=1.0, reconnect_max=4.0)
    fill(spool, clock, 2)
    with caplog.at_level(logging.INFO, logger="mqttspool.bridge"):
        bridge.step(0.0)
        pub.fail(kind, reason, 0x87 if kind is FailureKind.NOT_AUTHORIZED else None)
        bridge.step(0.0)
    # A refused login is not an unreachable broker: the line says so.
    what = "refused the login" if kind is FailureKind.NOT_AUTHORIZED else "unreachable"
    (line,) = bridge_lines(caplog, what)
    assert line.levelname == level
    assert f"broker fake:1883 {what}: {reason}; 2 reading(s) spooled" in line.getMessage()
    if hint:
        assert hint in line.getMessage()
    assert bridge.link.session is None and 1.0 <= bridge.next_attempt <= 4.0
    bridge.step(bridge.next_attempt)
    assert pub.generation == 2  # retried, never fatal


def test_control_messages_count_against_the_window(tmp_path: Path, clock: FakeClock) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=100, ack_timeout=3600)
    fill(spool, clock, 10)
    bridge.step(0.0)
    pub.accept(4)  # the broker's Receive Maximum
    bridge.step(0.0)
    assert [s.topic.rsplit("/", 1)[-1] for s in pub.sent] == ["status", "spool", "t", "t"]
    assert bridge.window_load == 4
    bridge.step(0.1)
    assert len(pub.sent) == 4  # nothing more until something is acknowledged
    pub.ack_control()
    bridge.step(0.2)
    assert len(pub.data()) == 4
    bridge.step(60.0)  # the minute's snapshot waits for a free slot too
    assert sum(s.topic.endswith("/spool") for s in pub.sent) == 1
    pub.ack([pub.data()[0].mid])
    bridge.step(60.1)
    assert pub.sent[-1].topic.endswith("/spool")
    assert bridge.window_load == 4


# ----------------------------------------------------------------- ack timeout


def test_unacknowledged_messages_time_out_reconnect_and_resend(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    bridge, pub, spool = make_bridge(
        tmp_path, clock, max_inflight=5, ack_timeout=30.0, reconnect_min=1.0, reconnect_max=1.0
    )
    fill(spool, clock, 8)
    assert bridge.unacked_since() is None
    connect(bridge, pub, 100.0)
    assert bridge.unacked_since() == 100.0
    pub.ack([pub.data()[0].mid])  # the broker acknowledges one, then nothing more
    bridge.step(101.0)
    assert bridge.unacked_since() == 100.0  # the oldest still unacknowledged
    with caplog.at_level(logging.WARNING, logger="mqttspool.bridge"):
        bridge.step(130.0)
        assert bridge.connected
        bridge.step(130.5)
    assert not bridge.connected
    assert bridge.unacked_since() is None
    (line,) = bridge_lines(caplog, "has not acknowledged")
    assert line.getMessage().startswith(
        "broker fake:1883 has not acknowledged 5 message(s) for 30.5 s (bridge.ack_timeout 30 s)"
    )
    pub.sent.clear()
    connect(bridge, pub, bridge.next_attempt)
    assert [s.doc()["seq"] for s in pub.data()] == [2, 3, 4, 5, 6]  # resent from the oldest


def test_ack_timeout_is_validated() -> None:
    for bad in ("0", "-1", "inf", "nan", "1e13"):
        with pytest.raises(ConfigError, match=r"bridge\.ack_timeout"):
            load_config(None, environ={"MQTTSPOOL_BRIDGE__ACK_TIMEOUT": bad})
    assert load_config(None, environ={}).bridge.ack_timeout == 30.0


def test_retained_control_messages_waiting_for_room_replace_each_other(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=2, ack_timeout=86_400)
    fill(spool, clock, 5)
    bridge.step(0.0)
    pub.accept()
    bridge.step(0.0)  # status and snapshot fill the window; nobody acknowledges
    for minute in range(1, 61):
        bridge.step(minute * 60.0)  # a snapshot a minute waits for room
    assert len(bridge.outbox.queue) == 1  # only the newest snapshot, not sixty
    pub.ack_control()
    bridge.step(3601.0)
    assert [s.topic.rsplit("/", 1)[-1] for s in pub.control()] == ["status", "spool", "spool"]
    assert json.loads(pub.control()[-1].payload)["depth"] == 5
    assert len(pub.data()) == 1  # the other slot
