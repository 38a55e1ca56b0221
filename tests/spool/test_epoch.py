"""When a writer start begins a new epoch, and that old rows keep their ids.

The power-cut proof is ``test_a_cut_at_normal_starts_a_new_epoch_so_no_id_is_reused``
in tests/powercut/test_commands.py; these are the decision and its bookkeeping.
"""

from __future__ import annotations

import logging
import random
import sqlite3
from pathlib import Path

import pytest
from fakes.clock import FakeClock
from fakes.publisher import FakePublisher
from support.spooltools import read_meta

from mqttspool.batch import decode as decode_batch
from mqttspool.bridge import build_bridge
from mqttspool.config import SpoolConfig, load_config
from mqttspool.reading import Reading, from_us
from mqttspool.spool import Spool, open_spool, recover_spool
from mqttspool.spool.epochs import new_epoch_reason


@pytest.mark.parametrize(
    ("marker", "level", "renews"),
    [
        ("clean", "normal", False),
        ("clean", "full", False),
        ("running:normal", "normal", True),
        ("running:normal", "full", True),  # the run that stopped uncleanly was at NORMAL
        ("running:full", "normal", False),  # FULL lost no commit
        ("running:full", "full", False),
        (None, "normal", True),  # no record (older spool): judged by the setting
        (None, "full", False),
    ],
)
def test_decision(marker: str | None, level: str, renews: bool) -> None:
    assert (new_epoch_reason(marker, level) is not None) is renews


def _open(path: Path, level: str) -> Spool:
    cfg = SpoolConfig.model_validate({"path": str(path), "min_free_bytes": 0, "synchronous": level})
    return open_spool(cfg, FakeClock())


def _append(spool: Spool, n: int) -> list[int]:
    ts = from_us(1_700_000_000_000_000)
    batch = [Reading(device="d", sensor="s", metric="m", value=float(i), ts=ts) for i in range(n)]
    return spool.append(batch).seqs


def _writer_session(path: Path, level: str, rows: int, clean: bool) -> tuple[str, str]:
    """One run/drain: start, append ``rows``, stop (cleanly or not); (epoch before, after start)."""
    spool = _open(path, level)
    try:
        before = spool.epoch
        spool.begin_writing()
        _append(spool, rows)
        if clean:
            spool.mark_clean()
        return before, spool.epoch
    finally:
        spool.close()


@pytest.mark.parametrize(
    ("level", "clean", "renews"),
    [
        ("normal", False, True),
        ("normal", True, False),
        ("full", False, False),
        ("full", True, False),
    ],
)
def test_writer_start_after_clean_or_unclean_stop(
    tmp_path: Path, level: str, clean: bool, renews: bool, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    first, same = _writer_session(path, level, 3, clean)
    assert first == same  # a new spool is recorded clean: its first start keeps the epoch
    caplog.set_level(logging.WARNING, logger="mqttspool.spool.durability")
    before, after = _writer_session(path, level, 2, clean=True)
    assert before == first
    assert (after != first) is renews
    warnings = [r.getMessage() for r in caplog.records if "new epoch" in r.getMessage()]
    if renews:
        (text,) = warnings
        assert f"new epoch {after} (was {first}) from seq 4" in text
        assert "spool.synchronous = normal) did not stop cleanly" in text
    else:
        assert warnings == []
    spool = _open(path, "full")
    try:  # old rows keep the old epoch, new rows carry the new one; status shows the new one
        assert [spool.epoch_of(s) for s in range(1, 6)] == [first] * 3 + [after] * 2
        assert spool.stats().epoch == after
    finally:
        spool.close()


def test_a_new_epoch_replaces_one_that_kept_no_row(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    _writer_session(path, "normal", 3, clean=False)
    _, second = _writer_session(path, "normal", 0, clean=False)  # a cut before any append
    _, third = _writer_session(path, "normal", 1, clean=True)
    assert len({second, third}) == 2
    with sqlite3.connect(path) as conn:
        starts = conn.execute("SELECT seq, epoch FROM epoch_start ORDER BY seq").fetchall()
    assert starts[1:] == [(4, third)]  # the empty epoch's range is gone, not ambiguous


def test_a_schema_2_spool_is_migrated_with_one_epoch_range(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = _open(path, "full")
    epoch = spool.epoch
    _append(spool, 2)
    spool.close()
    with sqlite3.connect(path) as conn:  # schema 2 had neither the table nor the record
        conn.execute("DROP TABLE epoch_start")
        conn.execute("DELETE FROM meta WHERE key = 'shutdown'")
        conn.execute("PRAGMA user_version = 2")
    spool = _open(path, "normal")
    try:
        assert [spool.epoch_of(1), spool.epoch_of(2)] == [epoch, epoch]
        change = spool.begin_writing()  # no record and NORMAL: it may have lost commits
        assert change is not None and change.old == epoch and change.first_seq == 3
        assert spool.epoch_of(2) == epoch and spool.epoch_of(3) == change.new
    finally:
        spool.close()


def test_salvage_keeps_every_epoch_range_and_the_shutdown_record(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    first, _ = _writer_session(path, "normal", 3, clean=False)
    _, second = _writer_session(path, "normal", 2, clean=False)
    assert first != second
    spool = recover_spool(SpoolConfig(path=str(path), min_free_bytes=0), FakeClock())
    try:
        assert [spool.epoch_of(s) for s in range(1, 6)] == [first] * 3 + [second] * 2
        assert read_meta(spool, "shutdown") == "running:normal"  # still unclean: renews next
    finally:
        spool.close()


def test_the_bridge_sends_each_row_with_its_own_epoch(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    first, _ = _writer_session(path, "normal", 2, clean=False)
    cfg = load_config(None, environ={})
    cfg.spool.path, cfg.spool.synchronous, cfg.device.id = str(path), "normal", "d"
    cfg.spool.min_free_bytes = 0
    clock = FakeClock()
    spool = open_spool(cfg.spool, clock)
    second = spool.begin_writing()
    assert second is not None
    _append(spool, 1)
    pub = FakePublisher()
    bridge = build_bridge(cfg, spool, pub, clock, rng=random.Random(7))
    try:
        bridge.step(0.0)  # starts the attempt
        pub.accept()
        bridge.step(0.0)
        pub.ack_control()
        bridge.step(0.0)
        ids = [m.doc()["id"] for m in pub.data()]
        assert ids == [f"d:{first}:1", f"d:{first}:2", f"d:{second.new}:3"]
    finally:
        spool.close()


def test_a_batch_never_spans_two_epochs(tmp_path: Path) -> None:
    """A batch payload carries one epoch: rows of an older epoch go in their own batch."""
    path = tmp_path / "spool.db"
    first, _ = _writer_session(path, "normal", 2, clean=False)
    cfg = load_config(None, environ={})
    cfg.spool.path, cfg.spool.synchronous, cfg.device.id = str(path), "normal", "d"
    cfg.spool.min_free_bytes = 0
    cfg.bridge.payload, cfg.bridge.batch_linger = "batch", 0
    clock = FakeClock()
    spool = open_spool(cfg.spool, clock)
    second = spool.begin_writing()
    assert second is not None
    _append(spool, 3)
    pub = FakePublisher()
    bridge = build_bridge(cfg, spool, pub, clock, rng=random.Random(7))
    try:
        bridge.step(0.0)
        pub.accept()
        bridge.step(0.0)
        pub.ack_control()
        bridge.step(0.0)
        batches = [decode_batch(m.payload) for m in pub.sent if m.topic.endswith("/batch")]
        assert [[r.id for r in b] for b in batches] == [
            [f"d:{first}:1", f"d:{first}:2"],
            [f"d:{second.new}:{seq}" for seq in (3, 4, 5)],
        ]
    finally:
        spool.close()
