"""Deletes a power cut could undo count against the window (issue 13: duplicates <= max_inflight).

The power-cut proof is ``test_a_cut_mid_drain_resends_at_most_max_inflight`` in
tests/test_powercut_runs.py; these check the bookkeeping and the fsync policy.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from fakes.clock import FakeClock
from fakes.publisher import FakePublisher

from mqttspool.bridge import Bridge
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
    tmp_path: Path, window: int, level: str = "full"
) -> tuple[Bridge, FakePublisher, Spool, list[bool]]:
    cfg: Settings = load_config(None, environ={"MQTTSPOOL_SPOOL__SYNCHRONOUS": level})
    cfg.spool.path, cfg.spool.min_free_bytes, cfg.device.id = str(tmp_path / "s.db"), 0, "d"
    cfg.bridge.max_inflight = window
    clock = FakeClock()
    spool = open_spool(cfg.spool, clock)
    flags: list[bool] = []
    real = spool.settle

    def spy(acked: Any, rejected: Any = (), durable: bool = False) -> None:
        flags.append(durable)
        real(acked, rejected, durable)

    spool.settle = spy  # type: ignore[method-assign]
    pub = FakePublisher()
    bridge = Bridge(cfg, spool, pub, clock, rng=random.Random(7))
    bridge.step(0.0)
    pub.accept()
    bridge.step(0.0)
    pub.ack_control()
    bridge.step(0.0)
    return bridge, pub, spool, flags


def _ack_new(pub: FakePublisher, seen: set[int]) -> int:
    fresh = [m for m in pub.data() if m.mid not in seen]
    seen.update(m.mid for m in fresh)
    pub.ack([m.mid for m in fresh])
    return len(fresh)


def test_a_trickle_settles_unsynced_and_counts_it_against_the_window(tmp_path: Path) -> None:
    # At NORMAL (at FULL each sampling round's fsync would cover the deletes as well).
    bridge, pub, spool, durable = _bridge(tmp_path, window=20, level="normal")
    seen: set[int] = set()
    try:
        spool.append(_readings(3))
        bridge.step(0.0)
        assert _ack_new(pub, seen) == 3
        bridge.step(0.0)  # acks noted
        bridge.step(1.0)  # the flush interval passed: settled, not fsynced
        assert durable == [False] and spool.depth() == 0
        assert bridge.window_load == 3  # a power cut now would resend these 3
        spool.append(_readings(8))
        bridge.step(1.0)
        assert _ack_new(pub, seen) == 8
        bridge.step(1.0)
        bridge.step(2.0)  # 3 + 8 unsynced would exceed half the window: fsync
        assert durable == [False, True] and bridge.window_load == 0
    finally:
        spool.close()


def test_a_full_window_settles_durably_and_never_holds_more_than_the_window(
    tmp_path: Path,
) -> None:
    bridge, pub, spool, durable = _bridge(tmp_path, window=20)
    seen: set[int] = set()
    try:
        spool.append(_readings(200))
        now = 0.0
        while spool.depth():
            bridge.step(now)
            assert bridge.window_load <= 20  # what a power cut could make us resend
            _ack_new(pub, seen)
            now += 0.01
        assert durable and all(durable)  # a backlog keeps the window full: each one fsynced
        assert len(seen) == 200
    finally:
        spool.close()
