"""An idle bridge costs nothing: no spool query per step, sleeps until something is due.

The mechanisms are proven here with a fake clock, a fake publisher and SQLite's trace
callback counting every statement the bridge's connection runs; the CPU numbers are
measured by ``bench/cost.py``.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.clock import FakeClock
from fakes.publisher import FakePublisher

from bridge.test_step import connect, fill, make_settings
from mqttspool.bridge import (
    ACK_FLUSH_S,
    SETTLE_DELAY_S,
    SNAPSHOT_INTERVAL_S,
    VERSION_CHECK_MAX_S,
    VERSION_CHECK_S,
    BatchSender,
    Bridge,
    BridgeThread,
    build_bridge,
)
from mqttspool.bridge import core as bridge_core
from mqttspool.bridge import leases as bridge_leases
from mqttspool.config import Settings
from mqttspool.counters import Counters
from mqttspool.mqtt import Acked
from mqttspool.service import make_bridge
from mqttspool.spool import Spool, open_spool
from mqttspool.wire.topics import spool_topic


class Statements:
    """Every SQL statement run on the calling thread's connection of ``spool``."""

    def __init__(self, spool: Spool) -> None:
        self.seen: list[str] = []
        self._conn: sqlite3.Connection = spool.db.connection()
        self._conn.set_trace_callback(self.seen.append)

    def take(self) -> list[str]:
        """The statements since the last call."""
        out, self.seen[:] = list(self.seen), []
        return out

    def close(self) -> None:
        """Stop tracing."""
        self._conn.set_trace_callback(None)


def idle_bridge(tmp_path: Path, clock: FakeClock) -> tuple[Bridge, FakePublisher, Spool]:
    """A connected bridge that sent 3 readings, had them acknowledged and deleted."""
    cfg = make_settings(tmp_path, max_inflight=10)
    spool = open_spool(cfg.spool, clock)
    pub = FakePublisher()
    bridge = build_bridge(cfg, spool, pub, clock, rng=random.Random(7))
    fill(spool, clock, 3)
    connect(bridge, pub, 0.0)
    assert bridge.watch.exhausted  # the lease found fewer rows than the window allowed
    pub.ack_all_data()
    bridge.step(0.1)  # takes the acks
    bridge.step(0.2)  # deletes them
    assert spool.depth() == 0 and len(pub.data()) == 3
    assert bridge.watch.next_check == pytest.approx(bridge_leases.VERSION_CHECK_S)  # at 0.0
    return bridge, pub, spool


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_idle_connected_step_runs_no_query_and_sleeps_until_the_version_check(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = idle_bridge(tmp_path, clock)
    trace = Statements(spool)
    try:
        check_at = bridge.watch.next_check
        delays = [bridge.step(t) for t in (0.3, 0.5, 0.9)]
        assert trace.take() == []  # not one statement while nothing can be new
        assert delays == pytest.approx([check_at - t for t in (0.3, 0.5, 0.9)])
        assert bridge.drained
        bridge.step(check_at)
        assert trace.take() == ["PRAGMA data_version"]  # the one cheap look, no table read
        # Nothing changed: the next look waits twice as long.
        assert bridge.step(check_at + 0.01) == pytest.approx(2 * VERSION_CHECK_S - 0.01)
        assert trace.take() == []
        assert len(pub.data()) == 3
    finally:
        trace.close()
        spool.close()


def test_an_idle_bridge_looks_less_often_until_another_process_commits(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The version check backs off 1, 2, 4, 4 s while nothing changes; a commit by
    another connection is found at the next look, and the looks start over at 1 s."""
    bridge, pub, spool = idle_bridge(tmp_path, clock)
    other = open_spool(bridge.settings.spool, clock)  # its own SQLite connection
    try:
        looks = []
        now = 0.0
        for _ in range(5):
            now = bridge.watch.next_check
            bridge.step(now)
            looks.append(now)
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(looks)]
        assert gaps == [2 * VERSION_CHECK_S, VERSION_CHECK_MAX_S, VERSION_CHECK_MAX_S, 4.0]
        new = fill(other, clock, 2)
        found_at = bridge.watch.next_check
        assert found_at == pytest.approx(looks[-1] + VERSION_CHECK_MAX_S)
        bridge.step(found_at)
        assert [s.doc()["seq"] for s in pub.data()[3:]] == new
        assert bridge.watch.next_check == pytest.approx(found_at + VERSION_CHECK_S)  # anew
    finally:
        other.close()
        spool.close()


def test_an_idle_bridge_without_the_version_check_sleeps_until_the_snapshot(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every timer is honoured: with nothing else due the snapshot decides the sleep."""
    monkeypatch.setattr(bridge_leases, "VERSION_CHECK_S", 3600.0)
    bridge, pub, spool = idle_bridge(tmp_path, clock)
    interval = bridge.cfg.settle_interval
    try:
        # The deletes at 0.2 are not fsync'd yet: bridge.settle_interval is a timer too.
        assert bridge.step(2.5) == pytest.approx(0.2 + interval - 2.5)
        assert spool.unsynced_deletes == 3
        bridge.step(0.2 + interval)
        assert spool.unsynced_deletes == 0
        assert bridge.step(0.3 + interval) == pytest.approx(SNAPSHOT_INTERVAL_S - 0.3 - interval)
        bridge.step(SNAPSHOT_INTERVAL_S)
        assert pub.control()[-1].topic == spool_topic(bridge.prefix, bridge.device)
        pub.ack_control()
        assert bridge.step(SNAPSHOT_INTERVAL_S) == pytest.approx(SNAPSHOT_INTERVAL_S)
    finally:
        spool.close()


def test_rows_committed_by_this_process_are_leased_at_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    bridge, pub, spool = idle_bridge(tmp_path, clock)
    try:
        new = fill(spool, clock, 2)  # as the sampler does, through the same Spool
        bridge.step(0.3)  # long before the version check
        assert [s.doc()["seq"] for s in pub.data()[3:]] == new
    finally:
        spool.close()


def test_rows_committed_by_another_connection_are_found_by_the_version_check(
    tmp_path: Path, clock: FakeClock
) -> None:
    """``mqttspool enqueue`` commits through its own connection: data_version sees it."""
    bridge, pub, spool = idle_bridge(tmp_path, clock)
    other = open_spool(bridge.settings.spool, clock)  # its own SQLite connection
    try:
        bridge.step(bridge.watch.next_check)  # baseline of data_version
        new = fill(other, clock, 2)
        bridge.step(bridge.watch.next_check - 0.01)
        assert len(pub.data()) == 3  # not noticed yet: no query happened
        bridge.step(bridge.watch.next_check)
        assert [s.doc()["seq"] for s in pub.data()[3:]] == new
    finally:
        other.close()
        spool.close()


def test_a_lease_postpones_the_version_check(tmp_path: Path, clock: FakeClock) -> None:
    """A daemon whose own commits come every second leases on them: the lease read
    everything, so the once-a-second check (and its wake-up) is not needed."""
    bridge, pub, spool = idle_bridge(tmp_path, clock)
    try:
        check_at = bridge.watch.next_check
        fill(spool, clock, 2)
        delay = bridge.step(check_at - 0.1)  # the commit's wake-up leases both
        assert len(pub.data()) == 5
        assert bridge.watch.next_check == pytest.approx(check_at - 0.1 + VERSION_CHECK_S)
        assert delay > 0.1  # nothing wakes it at the old check time
    finally:
        spool.close()


def test_a_commit_by_another_connection_right_after_a_lease_is_found_by_the_check(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version a lease records is read before its query: a commit that lands
    between the query and the end of the lease still counts as new."""
    bridge, pub, spool = idle_bridge(tmp_path, clock)
    other = open_spool(bridge.settings.spool, clock)
    take = bridge_leases.LeaseCursor.take
    late: list[int] = []

    def take_then_commit(self: bridge_leases.LeaseCursor, n: int, live_first: bool = False) -> Any:
        rows = take(self, n, live_first)
        if not late:
            late.extend(fill(other, clock, 1))  # after the SELECT, before the lease ends
        return rows

    monkeypatch.setattr(bridge_leases.LeaseCursor, "take", take_then_commit)
    try:
        fill(spool, clock, 1)
        bridge.step(0.3)  # leases the own row; the other commit lands right after
        assert len(pub.data()) == 4 and late
        bridge.step(bridge.watch.next_check)
        assert [s.doc()["seq"] for s in pub.data()[4:]] == late
    finally:
        other.close()
        spool.close()


def test_a_commit_by_the_sampler_wakes_the_bridge_thread(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the version check and the snapshot an hour away, only the wake-up can
    explain the reading going out."""
    monkeypatch.setattr(bridge_leases, "VERSION_CHECK_S", 3600.0)
    monkeypatch.setattr(bridge_core, "MAX_WAIT_S", 3600.0)
    cfg = make_settings(tmp_path)
    spool = open_spool(cfg.spool, clock)
    pub = SleepingPublisher(auto=True)
    thread = BridgeThread(build_bridge(cfg, spool, pub, clock), pub.wake)
    thread.start()
    try:
        wait_until(lambda: pub.sleeps >= 3 and pub.asleep, "the bridge to go idle")
        seqs = fill(spool, clock, 1)
        assert pub.wakes == 1  # the commit itself woke the bridge
        wait_until(lambda: len(pub.data()) == 1, "the reading to be published")
        assert pub.data()[0].doc()["seq"] == seqs[0]
    finally:
        thread.stop()
        thread.join(10)
        spool.close()
    assert not thread.is_alive()


def test_the_daemon_deletes_acknowledged_rows_in_batches_within_max_resend(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows acknowledged but not deleted yet count against max_resend (not the window),
    so a crash before the delete resends at most max_resend; they are deleted when the
    settle delay is up, or at once (and fsync'd) when the next readings need the room."""
    monkeypatch.setattr(bridge_leases, "VERSION_CHECK_S", 3600.0)  # only the settle timer
    cfg = make_settings(tmp_path, max_inflight=100, max_resend=20)
    spool = open_spool(cfg.spool, clock)
    pub = FakePublisher()
    bridge = build_bridge(cfg, spool, pub, clock, rng=random.Random(7), settle_delay=SETTLE_DELAY_S)
    try:
        fill(spool, clock, 5)
        connect(bridge, pub, 0.0)
        pub.ack_all_data()
        assert bridge.step(1.0) == pytest.approx(SETTLE_DELAY_S)
        assert spool.depth() == 5 and bridge.resend_load == 5 and bridge.window_load == 0
        fill(spool, clock, 30)
        bridge.step(2.0)
        assert len(pub.data()) == 5 + 15  # 5 acknowledged-not-deleted + 15 in flight = 20
        pub.ack_all_data()
        bridge.step(3.0)  # max_resend is full of acknowledged rows: deleted at once
        assert spool.depth() == 35 - 20 and len(pub.data()) == 35  # and the rest sent
        pub.ack_all_data()
        bridge.step(4.0)
        assert spool.depth() == 15
        assert bridge.step(4.0 + SETTLE_DELAY_S - 0.5) == pytest.approx(0.5)
        bridge.step(4.0 + SETTLE_DELAY_S)
        assert spool.depth() == 0 and bridge.published_total == 35
    finally:
        spool.close()


def lazy_bridge(
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    pub: FakePublisher | None = None,
    **bridge: Any,
) -> tuple[Bridge, FakePublisher, Spool]:
    """The daemon's bridge (lazy acks, the long settle delay) on a fake publisher, with
    the version check out of the way: only the ack and settle timers wake it."""
    monkeypatch.setattr(bridge_leases, "VERSION_CHECK_S", 3600.0)
    cfg = make_settings(tmp_path, **bridge)
    spool = open_spool(cfg.spool, clock)
    pub = pub or FakePublisher()
    return (
        build_bridge(cfg, spool, pub, clock, settle_delay=SETTLE_DELAY_S, lazy_acks=True),
        pub,
        spool,
    )


def test_with_lazy_acks_a_puback_wakes_the_bridge_only_when_something_waits_on_it(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's bridge is not woken once per PUBACK while the window and max_resend
    leave room: the acks wait for the next wake-up (new rows, a timer), at most
    LAZY_ACK_S while messages are in flight."""
    bridge, pub, spool = lazy_bridge(tmp_path, clock, monkeypatch, max_inflight=4, max_resend=100)
    try:
        connect(bridge, pub, 0.0)
        fill(spool, clock, 2)
        delay = bridge.step(0.5)
        assert (len(pub.data()), bridge.window_load) == (2, 2)
        assert pub.acks_wake is False  # 2 of 4 window slots free: nothing waits
        assert delay == pytest.approx(bridge_core.LAZY_ACK_S)  # in flight: a timer
        fill(spool, clock, 5)
        bridge.step(0.6)
        assert (len(pub.data()), bridge.window_load) == (4, 4)
        assert pub.acks_wake is True  # the window is full: the next PUBACK frees a slot
        pub.ack_all_data()
        bridge.step(0.7)
        assert (len(pub.data()), pub.acks_wake) == (7, False)
        bridge.stopping = True
        bridge.step(0.8)
        assert pub.acks_wake is True  # shutdown waits for the acks in flight
    finally:
        spool.close()


def test_lazily_handled_acks_are_deleted_a_settle_delay_after_they_arrived(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handling a PUBACK late (lazy acks) does not postpone its delete: the settle
    delay counts from when paho received it."""
    bridge, pub, spool = lazy_bridge(tmp_path, clock, monkeypatch, max_inflight=10)
    try:
        connect(bridge, pub, 0.0)
        fill(spool, clock, 2)
        bridge.step(0.5)
        mids = [s.mid for s in pub.data()]
        pub.pending.extend(Acked(pub.generation, mid, 0, "", at=0.6) for mid in mids)
        # Handled late. The timer wakes the loop a slack after the delay (a round of new
        # readings usually wakes it before), but any step once the delay is up settles.
        wait = bridge.step(4.0)
        assert wait == pytest.approx(0.6 + SETTLE_DELAY_S + bridge_core.LAZY_SETTLE_SLACK_S - 4.0)
        assert spool.depth() == 2
        bridge.step(0.6 + SETTLE_DELAY_S)
        assert spool.depth() == 0
    finally:
        spool.close()


def test_shutdown_waits_for_its_pubacks_with_acks_waking_it(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last lazy step left ``acks_wake`` off; the shutdown's waits (the acks in
    flight, then the ``offline`` status) must be ended by their PUBACKs, not run to
    their deadline (nothing in flight: no step runs before the ``offline`` wait)."""
    waits: list[bool] = []

    class Recording(FakePublisher):
        def wait(self, timeout: float) -> None:
            waits.append(self.acks_wake)
            self.ack_control()

    bridge, pub, spool = lazy_bridge(tmp_path, clock, monkeypatch, Recording(), max_inflight=10)
    try:
        connect(bridge, pub, 0.0)
        fill(spool, clock, 1)
        bridge.step(0.5)
        pub.ack_all_data()
        bridge.step(0.6)
        assert (bridge.inflight, pub.acks_wake) == (0, False)
        assert bridge.shutdown(10.0, lambda: 1.0, pub.wait) == 0
        assert waits == [True]  # the offline status' PUBACK ends the one wait
        assert pub.control()[-1].payload == b"offline"
    finally:
        spool.close()


def test_without_lazy_acks_every_puback_wakes_the_bridge(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """drain is throughput-bound (and ends on the last PUBACK): acks always wake it."""
    monkeypatch.setattr(bridge_leases, "VERSION_CHECK_S", 3600.0)
    cfg = make_settings(tmp_path, max_inflight=10)
    spool = open_spool(cfg.spool, clock)
    pub = FakePublisher()
    bridge = build_bridge(cfg, spool, pub, clock)
    try:
        connect(bridge, pub, 0.0)
        fill(spool, clock, 2)
        bridge.step(0.5)
        assert bridge.window_load == 2 and pub.acks_wake is True
        assert bridge.step(0.5) > bridge_core.LAZY_ACK_S  # no polling timer either
    finally:
        spool.close()


def test_the_daemon_has_lazy_acks_and_drain_not(tmp_path: Path, clock: FakeClock) -> None:
    settings: Settings = make_settings(tmp_path)
    spool = open_spool(settings.spool, clock)
    try:
        daemon, _ = make_bridge(settings, spool, clock, Counters())
        drain, _ = make_bridge(settings, spool, clock, Counters(), daemon=False)
        assert (daemon.lazy_acks, drain.lazy_acks) == (True, False)
    finally:
        spool.close()


def test_the_daemon_bridge_uses_the_long_settle_delay_and_drain_the_short_one(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings: Settings = make_settings(tmp_path, payload="batch")
    spool = open_spool(settings.spool, clock)
    try:
        daemon, _ = make_bridge(settings, spool, clock, Counters())
        drain, _ = make_bridge(settings, spool, clock, Counters(), daemon=False)
        assert daemon.settle_delay == SETTLE_DELAY_S
        assert drain.settle_delay == ACK_FLUSH_S
        assert isinstance(daemon.sender, BatchSender) and isinstance(drain.sender, BatchSender)
        assert (daemon.sender.linger, drain.sender.linger) == (10.0, 0.0)  # drain never lingers
        assert settings.bridge.batch_linger == 10.0  # the settings stay as loaded
    finally:
        spool.close()


def test_a_stopped_bridge_thread_unregisters_its_wake(tmp_path: Path, clock: FakeClock) -> None:
    settings: Settings = make_settings(tmp_path)
    spool = open_spool(settings.spool, clock)
    pub = SleepingPublisher(auto=True)
    thread = BridgeThread(build_bridge(settings, spool, pub, clock), pub.wake)
    thread.start()
    thread.stop()
    thread.join(10)
    wakes = pub.wakes
    fill(spool, clock, 1)
    assert pub.wakes == wakes  # the stopped thread's wake-up is no longer registered
    spool.close()


class SleepingPublisher(FakePublisher):
    """A fake whose ``wait`` really sleeps until :meth:`wake` or the timeout."""

    def __init__(self, auto: bool = False) -> None:
        super().__init__(auto=auto)
        self._woken = threading.Event()
        self.sleeps = 0
        self.asleep = False
        self.wakes = 0

    def wait(self, timeout: float) -> None:
        """Sleep like the real publisher: not while events wait to be handled."""
        self.sleeps += 1
        if not self.pending:
            self.asleep = True
            self._woken.wait(timeout)
            self.asleep = False
        self._woken.clear()

    def wake(self) -> None:
        """What BridgeThread and the spool call."""
        self.wakes += 1
        self._woken.set()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
