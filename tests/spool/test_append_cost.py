"""Fewer pages written per round, with exact salvage counting kept.

Appends no longer update ``meta`` (schema 3): ``count.reading`` is exact as of
``count.reading_hwm`` and the seqs appended above it count the rest. These
tests prove the mechanism (which statements an append runs, what the counters
say after every kind of change, that salvage still counts exactly); the bytes
are measured by ``bench/cost.py``.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes.clock import FakeClock
from support.spooltools import dead_letter, high_water_seq, read_meta

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading
from mqttspool.spool import Spool, open_spool, recover_spool
from mqttspool.spool.schema import (
    COUNT_READING,
    COUNT_READING_HWM,
    PAGE_SIZE,
    SCHEMA_VERSION,
    queued_rows,
)

BASE_TS = datetime(2026, 11, 26, tzinfo=UTC)


def reading(i: int) -> Reading:
    return Reading(
        device="edge-01",
        sensor="sim",
        metric="t",
        value=i + 0.5,
        ts=BASE_TS + timedelta(seconds=i),
        time_synced=True,
    )


def config(tmp_path: Path, **kw: object) -> SpoolConfig:
    return SpoolConfig(path=str(tmp_path / "spool.db"), min_free_bytes=0, **kw)  # type: ignore[arg-type]


def counted(s: Spool) -> int:
    """The queued rows as the counters (which salvage reads) say."""
    return queued_rows(
        int(read_meta(s, COUNT_READING) or 0),
        int(read_meta(s, COUNT_READING_HWM) or 0),
        high_water_seq(s),
    )


def test_new_spools_use_small_pages(tmp_path: Path) -> None:
    s = open_spool(config(tmp_path), FakeClock())
    s.close()
    with sqlite3.connect(tmp_path / "spool.db") as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 512


def test_an_append_runs_no_statement_on_meta(tmp_path: Path) -> None:
    s = open_spool(config(tmp_path), FakeClock())
    s.append([reading(-1)])  # the first write of a process passes the epoch fence once
    seen: list[str] = []
    conn: sqlite3.Connection = s.db.connection()
    conn.set_trace_callback(seen.append)
    try:
        s.append([reading(i) for i in range(10)])
    finally:
        conn.set_trace_callback(None)
    writes = [sql for sql in seen if not sql.startswith("SELECT")]
    assert [sql.split()[0] for sql in writes] == ["BEGIN", "INSERT", "COMMIT"]
    assert "meta" not in " ".join(writes)
    assert read_meta(s, COUNT_READING) == "0"  # untouched; the seqs above the mark count
    assert counted(s) == s.depth() == 11
    s.close()


def test_the_counters_stay_exact_through_every_kind_of_change(tmp_path: Path) -> None:
    cfg = config(tmp_path, max_rows=50, overflow="drop_oldest")
    s = open_spool(cfg, FakeClock())
    try:
        seqs = s.append([reading(i) for i in range(30)]).seqs
        assert counted(s) == s.depth() == 30
        s.settle(seqs[:5])  # delivered
        assert counted(s) == s.depth() == 25
        dead_letter(s, seqs[5], 0x87, "not authorized")
        assert counted(s) == s.depth() == 24
        s.append([reading(100 + i) for i in range(40)])  # over max_rows: oldest dropped
        assert counted(s) == s.depth() == 50
        assert s.requeue(None) == 1  # the dead letter comes back with its seq
        assert counted(s) == s.depth() == 51  # max_rows bounds appends, not requeues
        s.append([reading(200)])
        assert counted(s) == s.depth() == 50
    finally:
        s.close()


def test_a_requeued_seq_above_the_high_water_mark_is_counted_once(tmp_path: Path) -> None:
    """After a salvage that lost the newest rows, a dead letter can carry a seq above
    the queue's high-water mark; requeueing it raises the mark by more than one row."""
    s = open_spool(config(tmp_path), FakeClock())
    try:
        s.append([reading(i) for i in range(3)])
        dead_letter(s, 3, 0x87, "not authorized")
        s.db.execute_sql("UPDATE dead_letter SET seq = 10 WHERE seq = 3")
        assert s.requeue(None) == 1
        assert high_water_seq(s) == 10
        assert counted(s) == s.depth() == 3
        s.append([reading(9)])
        assert counted(s) == s.depth() == 4
    finally:
        s.close()


def test_a_schema_2_spool_is_migrated_with_its_count_marked(tmp_path: Path) -> None:
    s = open_spool(config(tmp_path), FakeClock())
    s.append([reading(i) for i in range(7)])
    s.settle([1, 2])
    s.close()
    with sqlite3.connect(tmp_path / "spool.db") as conn:  # as schema 2 left it
        conn.execute("UPDATE meta SET value = '5' WHERE key = ?", (COUNT_READING,))
        conn.execute("DELETE FROM meta WHERE key = ?", (COUNT_READING_HWM,))
        conn.execute("PRAGMA user_version = 2")
    s = open_spool(config(tmp_path), FakeClock())
    try:
        with sqlite3.connect(tmp_path / "spool.db") as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert read_meta(s, COUNT_READING_HWM) == "7"
        s.append([reading(50)])
        assert counted(s) == s.depth() == 6
    finally:
        s.close()


@pytest.mark.parametrize("deleted_last", [False, True])
def test_salvage_counts_rows_appended_since_the_last_delete_exactly(
    tmp_path: Path, deleted_last: bool
) -> None:
    """Damage to the newest leaf loses rows the counters never saw one by one."""
    cfg = config(tmp_path)
    s = open_spool(cfg, FakeClock())
    seqs: list[int] = []
    for r in range(60):
        seqs += s.append([reading(r * 10 + i) for i in range(10)]).seqs
    if deleted_last:
        s.settle(seqs[:100])
        seqs = seqs[100:]
    s.close()
    path = tmp_path / "spool.db"
    _smash(path, _newest_leaf(path))
    lost = len(seqs) - len(_readable(path, seqs))
    assert lost > 0
    s = recover_spool(cfg, FakeClock())
    try:
        assert s.stats().dropped == {"corrupt": lost}
        assert s.depth() == len(seqs) - lost
        assert counted(s) == s.depth()
    finally:
        s.close()


def _newest_leaf(path: Path) -> int:
    """The leaf page holding the highest seq (after a checkpoint into the main file)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        row = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'reading' AND pagetype = 'leaf'"
            " ORDER BY pageno DESC LIMIT 1"
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


def _smash(path: Path, page: int) -> None:
    with path.open("r+b") as fh:
        fh.seek((page - 1) * PAGE_SIZE)
        fh.write(b"\xa5" * PAGE_SIZE)


def _readable(path: Path, seqs: list[int]) -> set[int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    ok: set[int] = set()
    try:
        for seq in seqs:
            try:
                if conn.execute("SELECT 1 FROM reading WHERE seq = ?", (seq,)).fetchone():
                    ok.add(seq)
            except sqlite3.DatabaseError:
                continue
    finally:
        conn.close()
    return ok
