"""Deletes a power cut could undo count against ``bridge.max_resend``, not the window.

The power-cut proof is ``test_a_cut_mid_drain_resends_at_most_max_resend`` in
tests/powercut/test_commands.py; these check the bookkeeping and the fsync policy.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from fakes.clock import FakeClock
from fakes.publisher import FakePublisher

from mqttspool.bridge import Bridge, build_bridge
from mqttspool.config import Settings, SpoolConfig, load_config
from mqttspool.reading import Reading, from_us
from mqttspool.spool import Spool, open_spool


def _readings(n: int) -> list[Reading]:
    ts = from_us(1_700_000_000_000_000)
    return [Reading(device="d", sensor="s", metric="m", value=float(i), ts=ts) for i in range(n)]


@pytest.mark.parametrize("level", ["full", "normal"])
def test_unsynced_deletes_are_counted_until_an_fsynced_commit(tmp_path: Path, level: str) -> None:
    cfg = SpoolConfig.model_validate(
        {"path": str(tmp_path / "s.db"), "min_free_bytes": 0, "synchronous": level}
    )
    spool = open_spool(cfg, FakeClock())
    try:
        seqs = spool.append(_readings(10)).seqs
        spool.settle(seqs[:3])
        spool.settle(seqs[3:5])
        assert spool.unsynced_deletes == 5
        spool.append(_readings(1))  # a sampling round: fsynced only at FULL
        assert spool.unsynced_deletes == (0 if level == "full" else 5)
        spool.settle(seqs[5:6], durable=True)  # fsynced: covers itself and every earlier one
        assert spool.unsynced_deletes == 0
        spool.settle(seqs[6:8])
        spool.sync_deletes()
        assert spool.unsynced_deletes == 0
        assert spool.depth() == 3
    finally:
        spool.close()


def _bridge(
    tmp_path: Path, window: int, max_resend: int, level: str = "full"
) -> tuple[Bridge, FakePublisher, Spool, list[str]]:
    """A connected bridge whose spool records each fsync'd delete (``durable`` settle or
    ``sync_deletes``) and each cheap one."""
    cfg: Settings = load_config(None, environ={"MQTTSPOOL_SPOOL__SYNCHRONOUS": level})
    cfg.spool.path, cfg.spool.min_free_bytes, cfg.device.id = str(tmp_path / "s.db"), 0, "d"
    cfg.bridge.max_inflight, cfg.bridge.max_resend = window, max_resend
    clock = FakeClock()
    spool = open_spool(cfg.spool, clock)
    ops: list[str] = []
    settle, sync = spool.settle, spool.sync_deletes

    def settle_spy(acked: Any, rejected: Any = (), durable: bool = False) -> None:
        ops.append("fsync" if durable else "cheap")
        settle(acked, rejected, durable)

    def sync_spy() -> None:
        ops.append("fsync")
        sync()

    spool.settle = settle_spy  # type: ignore[method-assign]
    spool.sync_deletes = sync_spy  # type: ignore[method-assign]
    pub = FakePublisher()
    bridge = build_bridge(cfg, spool, pub, clock, rng=random.Random(7))
    bridge.step(0.0)
    pub.accept()
    bridge.step(0.0)
    pub.ack_control()
    bridge.step(0.0)
    return bridge, pub, spool, ops


def _ack_new(pub: FakePublisher, seen: set[int]) -> int:
    fresh = [m for m in pub.data() if m.mid not in seen]
    seen.update(m.mid for m in fresh)
    pub.ack([m.mid for m in fresh])
    return len(fresh)


def test_a_trickle_deletes_cheaply_and_fsyncs_within_the_settle_interval(
    tmp_path: Path,
) -> None:
    # At NORMAL (at FULL each sampling round's fsync would cover the deletes as well).
    bridge, pub, spool, ops = _bridge(tmp_path, window=20, max_resend=2000, level="normal")
    interval = bridge.cfg.settle_interval
    seen: set[int] = set()
    try:
        spool.append(_readings(3))
        bridge.step(0.0)
        assert _ack_new(pub, seen) == 3
        bridge.step(0.0)  # acks noted
        bridge.step(1.0)  # the flush interval passed: deleted, not fsync'd
        assert ops == ["cheap"] and spool.depth() == 0
        assert bridge.resend_load == 3  # a power cut now would resend these 3
        assert bridge.window_load == 0  # ...but they hold no room in the window
        assert bridge.step(1.0 + interval - 0.5) == pytest.approx(0.5)  # the settle timer
        bridge.step(1.0 + interval)
        assert ops == ["cheap", "fsync"] and bridge.resend_load == 0
    finally:
        spool.close()


@pytest.mark.parametrize("level", ["full", "normal"])
def test_a_backlog_fsyncs_once_per_half_max_resend_and_never_passes_it(
    tmp_path: Path, level: str
) -> None:
    bridge, pub, spool, ops = _bridge(tmp_path, window=20, max_resend=100, level=level)
    seen: set[int] = set()
    try:
        spool.append(_readings(1000))
        now = 0.0
        while spool.depth():
            bridge.step(now)
            assert bridge.resend_load <= 100  # what a power cut could make us resend
            assert bridge.window_load <= 20
            _ack_new(pub, seen)
            now += 0.01
        assert len(seen) == 1000
        # Not one per window (50): one per ~max_resend/2 readings.
        assert 0 < ops.count("fsync") <= 1000 // 50 + 1
    finally:
        spool.close()
