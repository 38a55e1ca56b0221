"""Salvage counts exactly the queued readings it could not read.

Each test knows which seqs were queued when the file was damaged, computes
independently which of them are still readable (point lookups on the damaged
file, checked against the values that were written) and expects
``dropped.corrupt`` to be exactly the difference: never fewer, never more.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes.clock import FakeClock
from support.spooltools import ack, all_seqs, dead_letter, read_meta

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading
from mqttspool.spool import Spool, open_spool, recover_spool

BASE_TS = datetime(2026, 11, 26, tzinfo=UTC)


def reading(i: int) -> Reading:
    """Reading number ``i``: its value identifies it."""
    return Reading(
        device="edge-01",
        sensor="sim",
        metric="temperature",
        value=i + 0.25,
        ts=BASE_TS + timedelta(seconds=i),
        time_synced=True,
    )


def _config(tmp_path: Path) -> SpoolConfig:
    return SpoolConfig(path=str(tmp_path / "spool.db"), min_free_bytes=0)


def _fill(s: Spool, first: int, n: int) -> list[int]:
    """Append readings ``first .. first+n-1``; returns their seqs."""
    seqs: list[int] = []
    for lo in range(first, first + n, 500):
        seqs += s.append([reading(i) for i in range(lo, min(lo + 500, first + n))]).seqs
    return seqs


def _leaf_pages(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'reading' AND pagetype = 'leaf' ORDER BY pageno"
        ).fetchall()
    finally:
        conn.close()
    return [int(r[0]) for r in rows]


def _smash(path: Path, page: int) -> None:
    conn = sqlite3.connect(path)
    try:
        size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    with path.open("r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\xa5" * size)


def _still_readable(path: Path, queued: dict[int, float]) -> set[int]:
    """The queued seqs whose row a point lookup still returns intact."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.execute("PRAGMA writable_schema = ON")  # lets a truncated file show what is left
    ok: set[int] = set()
    try:
        for seq, value in queued.items():
            try:
                row = conn.execute("SELECT value FROM reading WHERE seq = ?", (seq,)).fetchone()
            except sqlite3.DatabaseError:
                continue
            if row is not None and row[0] == value:
                ok.add(seq)
    finally:
        conn.close()
    return ok


def _salvage(cfg: SpoolConfig, queued: dict[int, float]) -> tuple[Spool, int]:
    """Run salvage; returns the new spool and the loss computed from the damaged file."""
    path = Path(cfg.path)
    readable = _still_readable(path, queued)
    s = recover_spool(cfg, FakeClock())
    return s, len(queued) - len(readable)


def _queued(seqs: Iterable[int], first_value: int) -> dict[int, float]:
    return {seq: first_value + k + 0.25 for k, seq in enumerate(seqs)}


def test_dead_letter_and_deleted_rows_are_not_counted_as_lost(tmp_path: Path) -> None:
    """(a) 1 dead letter at seq 1, 500 delivered and deleted, 1500 new, one page smashed."""
    cfg = _config(tmp_path)
    s = open_spool(cfg, FakeClock())
    _fill(s, 0, 1)
    dead_letter(s, 1, 0x87, "not authorized")
    ack(s, _fill(s, 1, 500))
    new = _fill(s, 501, 1500)
    epoch = s.epoch
    s.close()
    leaves = _leaf_pages(tmp_path / "spool.db")
    _smash(tmp_path / "spool.db", leaves[len(leaves) // 2])

    queued = _queued(new, 501)
    s, lost = _salvage(cfg, queued)
    try:
        assert 0 < lost < 100
        assert s.stats().dropped == {"corrupt": lost}
        assert s.depth() == 1500 - lost
        assert [d.reading.seq for d in s.dead_letters()] == [1]
        assert s.epoch == epoch
        assert s.append([reading(9999)]).seqs == [2002]
    finally:
        s.close()


def test_losing_the_first_leaf_page_counts_the_lowest_seqs(tmp_path: Path) -> None:
    """(b) 20k queued, the first leaf page of ``reading`` smashed: seqs 1..k are counted."""
    cfg = _config(tmp_path)
    s = open_spool(cfg, FakeClock())
    seqs = _fill(s, 0, 20_000)
    s.close()
    _smash(tmp_path / "spool.db", _leaf_pages(tmp_path / "spool.db")[0])

    queued = _queued(seqs, 0)
    s, lost = _salvage(cfg, queued)
    try:
        assert lost > 0
        assert 1 not in all_seqs(s)
        assert s.stats().dropped == {"corrupt": lost}
        assert s.depth() == 20_000 - lost
    finally:
        s.close()


@pytest.mark.parametrize("size", [100_000, 30_000])
def test_truncated_spool_counts_every_lost_row(tmp_path: Path, size: int) -> None:
    """(c) ``truncate -s SIZE`` of a 20k-row spool: every row past the cut is counted."""
    cfg = _config(tmp_path)
    s = open_spool(cfg, FakeClock())
    seqs = _fill(s, 0, 20_000)
    ack(s, seqs[:100])  # delivered before the damage: not lost
    s.count_drop("sampler_overflow", 2)
    s.close()
    _leaf_pages(tmp_path / "spool.db")  # checkpoint: everything is in the main file
    os.truncate(tmp_path / "spool.db", size)

    queued = _queued(seqs[100:], 100)
    s, lost = _salvage(cfg, queued)
    try:
        assert lost > 18_000
        assert s.stats().dropped == {"corrupt": lost, "sampler_overflow": 2}
        assert s.depth() == 19_900 - lost
    finally:
        s.close()


def test_an_old_spool_without_row_counters_is_migrated_with_exact_counts(tmp_path: Path) -> None:
    """Schema 1 had no counters: opening it counts the rows once, so later salvage is exact."""
    cfg = _config(tmp_path)
    s = open_spool(cfg, FakeClock())
    seqs = _fill(s, 0, 3000)
    s.close()
    conn = sqlite3.connect(tmp_path / "spool.db")
    conn.execute("DELETE FROM meta WHERE key LIKE 'count.%'")
    conn.execute("ALTER TABLE reading DROP COLUMN clock_stamped")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    s = open_spool(cfg, FakeClock())  # migrates 1 -> 2
    assert read_meta(s, "count.reading") == "3000"
    ack(s, seqs[:10])
    s.close()
    _smash(tmp_path / "spool.db", _leaf_pages(tmp_path / "spool.db")[3])

    s, lost = _salvage(cfg, _queued(seqs[10:], 10))
    try:
        assert lost > 0
        assert s.stats().dropped == {"corrupt": lost}
    finally:
        s.close()
