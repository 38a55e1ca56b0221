"""The spool: queue operations, seq stability, reopening, bounds, foreign and corrupt files."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes.clock import FakeClock
from support.spooltools import ack, all_seqs, dead_letter, read_meta, write_meta

from mqttspool.bridge import LeaseCursor
from mqttspool.config import SpoolConfig
from mqttspool.errors import NotASpoolError, SpoolCorruptError, SpoolError
from mqttspool.reading import Reading, StoredReading, from_us
from mqttspool.spool import (
    Rejection,
    Spool,
    classify_file,
    open_spool,
    read_stats_json,
)
from mqttspool.spool.readonly import APPLICATION_ID

BASE_TS = datetime(2026, 11, 26, tzinfo=UTC)
COLUMNS = "seq, device, sensor, metric, value, unit, ts_us, time_synced"


def reading(
    i: int, *, ts: datetime | None = None, synced: bool = True, sensor: str = "sim"
) -> Reading:
    """Reading number ``i``: its value (i + 0.25) identifies it."""
    return Reading(
        device="edge-01",
        sensor=sensor,
        metric="temperature",
        value=i + 0.25,
        unit="°C",
        ts=ts or BASE_TS + timedelta(seconds=i),
        time_synced=synced,
    )


def config(tmp_path: Path, **kw: Any) -> SpoolConfig:
    kw.setdefault("min_free_bytes", 0)
    return SpoolConfig(path=str(tmp_path / "spool.db"), **kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool(tmp_path: Path, clock: FakeClock) -> Iterator[Spool]:
    s = open_spool(config(tmp_path), clock)
    yield s
    s.close()


def values(rows: list[StoredReading]) -> list[float]:
    return [r.value for r in rows]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------ queue basics


def test_new_spool_file_is_marked_as_ours(tmp_path: Path, spool: Spool) -> None:
    path = tmp_path / "spool.db"
    assert classify_file(path) == "ours"
    assert int.from_bytes(path.read_bytes()[68:72], "big") == APPLICATION_ID
    assert len(spool.epoch) == 8
    int(spool.epoch, 16)
    assert read_meta(spool, "epoch") == spool.epoch
    assert spool.integrity_ok()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_append_returns_consecutive_seqs_and_lease_returns_the_rows(spool: Spool) -> None:
    result = spool.append([reading(i) for i in range(3)])
    assert result.seqs == [1, 2, 3]
    assert result.dropped == {}
    assert spool.append([reading(3)]).seqs == [4]
    assert spool.append([]).seqs == []
    leases = LeaseCursor(spool)
    rows = leases.take(10)
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert rows[0] == StoredReading(
        seq=1,
        device="edge-01",
        sensor="sim",
        metric="temperature",
        value=0.25,
        unit="°C",
        ts_us=reading(0).ts_us,
        time_synced=True,
    )
    assert leases.take(10) == []  # everything is leased


def test_lease_respects_n_and_continues(spool: Spool) -> None:
    spool.append([reading(i) for i in range(5)])
    leases = LeaseCursor(spool)
    assert [r.seq for r in leases.take(2)] == [1, 2]
    assert [r.seq for r in leases.take(2)] == [3, 4]
    assert [r.seq for r in leases.take(0)] == []
    spool.append([reading(5)])
    assert [r.seq for r in leases.take(9)] == [5, 6]


def test_settle_deletes_acked_and_dead_letters_rejected(spool: Spool, clock: FakeClock) -> None:
    spool.append([reading(i) for i in range(5)])
    spool.settle([1, 2], [Rejection(3, 0x87, "not authorized")])
    assert all_seqs(spool) == [4, 5]
    stats = spool.stats()
    assert stats.depth == 2
    assert stats.dead_letters == 1
    assert stats.oldest_ts_us == reading(3).ts_us
    assert stats.last_publish_us == clock.wall
    (dl,) = spool.dead_letters()
    assert (dl.reading.seq, dl.reading.value, dl.code, dl.reason) == (
        3,
        2.25,
        0x87,
        "not authorized",
    )
    assert dl.failed_at_us == clock.wall
    ack(spool, [4])
    dead_letter(spool, 5, 0x97, "quota exceeded")
    assert spool.depth() == 0
    assert [(d.reading.seq, d.code) for d in spool.dead_letters()] == [(3, 0x87), (5, 0x97)]
    assert [d.reading.seq for d in spool.dead_letters(limit=1)] == [3]
    spool.settle([], [])  # nothing to do


def test_requeue_keeps_the_seq_and_purge_counts(spool: Spool) -> None:
    spool.append([reading(i) for i in range(4)])
    for seq in (1, 2, 3):
        dead_letter(spool, seq, 0x87, "no")
    assert spool.requeue([2]) == 1
    assert all_seqs(spool) == [2, 4]
    assert [r.value for r in spool.rows_after(0, 10)] == [1.25, 3.25]  # same reading, same seq
    assert spool.requeue([]) == 0
    assert spool.purge([1]) == 1
    assert spool.stats().dropped == {"purged": 1}
    assert spool.requeue(None) == 1  # seq 3
    assert all_seqs(spool) == [2, 3, 4]
    assert spool.dead_letters() == []
    dead_letter(spool, 4, 0x80, "unspecified")
    assert spool.purge(None) == 1
    assert spool.stats().dropped == {"purged": 2}
    assert spool.append([reading(9)]).seqs == [5]


def test_stats_and_status_document(spool: Spool, clock: FakeClock) -> None:
    empty = spool.stats()
    assert (empty.depth, empty.oldest_ts_us, empty.dead_letters, empty.dropped) == (0, None, 0, {})
    assert empty.last_publish_us is None
    assert empty.oldest_age_seconds(clock.wall) is None
    ts = from_us(clock.wall - 90_500_000)
    spool.append([reading(0, ts=ts), reading(1)])
    spool.count_drop("sampler_overflow", 2)
    stats = spool.stats()
    assert stats.oldest_age_seconds(clock.wall) == 90.5
    doc = read_stats_json(stats, "edge-01", clock.wall)
    assert doc == {
        "device": "edge-01",
        "epoch": spool.epoch,
        "depth": 2,
        "oldest_age_seconds": 90.5,
        "dead_letters": 0,
        "dropped": {"sampler_overflow": 2},
        "last_publish": None,
        "spool_path": str(spool.path),
    }


def test_meta_values(spool: Spool) -> None:
    assert read_meta(spool, "heartbeat") is None
    write_meta(spool, "heartbeat", "1")
    write_meta(spool, "heartbeat", "2")
    assert read_meta(spool, "heartbeat") == "2"


# --------------------------------------------------------- seq stability


def test_seqs_are_never_reused_after_deletes(spool: Spool) -> None:
    spool.append([reading(i) for i in range(5)])
    ack(spool, [4, 5])  # delete the highest rows: plain rowid would reuse 4 and 5
    assert spool.append([reading(5)]).seqs == [6]
    ack(spool, [1, 2, 3, 6])
    assert spool.depth() == 0
    assert spool.append([reading(6), reading(7)]).seqs == [7, 8]


def test_seqs_are_never_reused_across_reopen(tmp_path: Path, clock: FakeClock) -> None:
    cfg = config(tmp_path)
    s = open_spool(cfg, clock)
    s.append([reading(i) for i in range(10)])
    ack(s, list(range(1, 11)))
    epoch = s.epoch
    s.close()
    s = open_spool(cfg, clock)
    try:
        assert s.epoch == epoch
        assert s.depth() == 0
        assert s.append([reading(10)]).seqs == [11]
    finally:
        s.close()


def test_reopen_loses_nothing(tmp_path: Path, clock: FakeClock) -> None:
    cfg = config(tmp_path, max_rows=50)
    s = open_spool(cfg, clock)
    for rnd in range(10):
        s.append([reading(rnd * 8 + i) for i in range(8)])  # 80 rows into 50: 30 dropped
    dead_letter(s, 31, 0x87, "no")
    ack(s, [32])
    s.count_drop("sampler_overflow", 3)
    before_rows = s.rows_after(0, 1000)
    before_stats = s.stats()
    before_dead = s.dead_letters()
    s.close()

    s = open_spool(cfg, clock)
    try:
        assert s.rows_after(0, 1000) == before_rows
        assert [r.seq for r in before_rows] == list(range(33, 81))
        assert values(before_rows) == [i + 0.25 for i in range(32, 80)]
        assert s.stats() == before_stats
        assert before_stats.dropped == {"max_rows": 30, "sampler_overflow": 3}
        assert s.dead_letters() == before_dead
        assert s.append([reading(99)]).seqs == [81]
        assert s.integrity_ok()
    finally:
        s.close()


# ---------------------------------------------------------------- leasing


def test_live_first_sends_fresh_readings_ahead_of_the_backlog(spool: Spool) -> None:
    spool.append([reading(i) for i in range(5)])  # backlog: seqs 1..5
    leases = LeaseCursor(spool)
    assert [r.seq for r in leases.take(2, live_first=True)] == [1, 2]
    spool.append([reading(5), reading(6)])  # live: 6, 7
    assert [r.seq for r in leases.take(3, live_first=True)] == [6, 7, 3]
    spool.append([reading(7)])  # live: 8
    assert [r.seq for r in leases.take(10, live_first=True)] == [8, 4, 5]
    assert leases.take(10, live_first=True) == []  # backlog done: one cursor again
    spool.append([reading(8), reading(9)])
    assert [r.seq for r in leases.take(1, live_first=True)] == [9]
    assert [r.seq for r in leases.take(5, live_first=True)] == [10]


def test_release_leases_makes_unacked_rows_leasable_again(spool: Spool) -> None:
    spool.append([reading(i) for i in range(6)])
    leases = LeaseCursor(spool)
    assert [r.seq for r in leases.take(4)] == [1, 2, 3, 4]
    ack(spool, [1, 3])
    leases.release()
    assert [r.seq for r in leases.take(10)] == [2, 4, 5, 6]
    leases.release()
    assert [r.seq for r in leases.take(2, live_first=True)] == [2, 4]
    spool.append([reading(6)])
    assert [r.seq for r in leases.take(2, live_first=True)] == [7, 5]
    leases.release()  # live_first state is reset too
    assert [r.seq for r in leases.take(10, live_first=True)] == [2, 4, 5, 6, 7]


# ----------------------------------------------------------------- bounds


def test_max_rows_drop_oldest(tmp_path: Path, clock: FakeClock) -> None:
    s = open_spool(config(tmp_path, max_rows=10), clock)
    try:
        assert s.append([reading(i) for i in range(8)]).seqs == list(range(1, 9))
        result = s.append([reading(i) for i in range(8, 16)])
        assert result.seqs == list(range(9, 17))
        assert result.dropped == {"max_rows": 6}
        assert all_seqs(s) == list(range(7, 17))
        assert values(s.rows_after(0, 100)) == [i + 0.25 for i in range(6, 16)]
        # A batch larger than the bound: the queue is emptied, the batch's oldest go too.
        result = s.append([reading(i) for i in range(100, 113)])
        assert result.dropped == {"max_rows": 13}
        assert result.seqs == list(range(17, 27))
        assert values(s.rows_after(0, 100)) == [i + 0.25 for i in range(103, 113)]
        assert s.stats().dropped == {"max_rows": 19}
    finally:
        s.close()


def test_max_rows_drop_newest(tmp_path: Path, clock: FakeClock) -> None:
    s = open_spool(config(tmp_path, max_rows=10, overflow="drop_newest"), clock)
    try:
        s.append([reading(i) for i in range(8)])
        result = s.append([reading(i) for i in range(8, 16)])
        assert result.seqs == [9, 10]
        assert result.dropped == {"max_rows": 6}
        result = s.append([reading(99)])
        assert result.seqs == []
        assert result.dropped == {"max_rows": 1}
        assert all_seqs(s) == list(range(1, 11))
        assert values(s.rows_after(0, 100)) == [i + 0.25 for i in range(10)]
        assert s.stats().dropped == {"max_rows": 7}
        ack(s, [1, 2, 3])
        assert s.append([reading(i) for i in range(4)]).seqs == [11, 12, 13]
        assert s.stats().dropped == {"max_rows": 8}
    finally:
        s.close()


def test_max_rows_counts_real_rows_when_seqs_have_gaps(tmp_path: Path, clock: FakeClock) -> None:
    s = open_spool(config(tmp_path, max_rows=5), clock)
    try:
        s.append([reading(i) for i in range(5)])
        ack(s, [2, 3, 4])  # 2 rows left, seq range 1..5
        result = s.append([reading(i) for i in range(3)])
        assert result.dropped == {}
        assert all_seqs(s) == [1, 5, 6, 7, 8]
    finally:
        s.close()


def test_max_age_trusts_only_synced_timestamps_and_this_boots_monotonic_time(
    tmp_path: Path, clock: FakeClock
) -> None:
    s = open_spool(config(tmp_path, max_age=60), clock)
    ancient = datetime(2000, 1, 1, tzinfo=UTC)  # a clock without RTC, before sync
    try:
        clock.boot = "previous-boot"
        old_boot = s.append(
            [
                reading(0, ts=ancient, synced=False),  # kept: no trustworthy age
                reading(1, ts=from_us(clock.wall - 3_600_000_000)),  # synced, 1 h old
            ]
        ).seqs
        clock.boot = "fake-boot"
        clock.advance(5)
        this_boot = s.append(
            [
                reading(2, ts=from_us(clock.wall - 120_000_000)),  # synced, 2 min old
                reading(3, ts=from_us(clock.wall)),  # synced, fresh
                reading(4, ts=ancient, synced=False),  # unsynced, just spooled
                reading(5, ts=from_us(clock.wall + 86_400_000_000), synced=False),
            ]
        ).seqs
        assert (old_boot, this_boot) == ([1, 2], [3, 4, 5, 6])
        assert s.expire() == 2
        assert all_seqs(s) == [1, 4, 5, 6]
        clock.advance(59)
        assert s.expire() == 0
        clock.advance(2)  # 61 s after the second round
        assert s.expire() == 3
        assert all_seqs(s) == [1]
        clock.advance(10 * 86_400)
        assert s.expire() == 0
        assert all_seqs(s) == [1]
        assert s.stats().dropped == {"max_age": 5}
    finally:
        s.close()


def test_max_age_zero_expires_nothing(spool: Spool, clock: FakeClock) -> None:
    spool.append([reading(0, ts=datetime(2000, 1, 1, tzinfo=UTC))])
    clock.advance(10**6)
    assert spool.expire() == 0
    assert spool.depth() == 1


def test_append_applies_max_age(tmp_path: Path, clock: FakeClock) -> None:
    cfg = config(tmp_path, max_age=60)
    s = open_spool(cfg, clock)
    s.append([reading(0, ts=from_us(clock.wall))])
    s.close()
    clock.advance(61)
    s = open_spool(cfg, clock)  # a fresh Spool expires on its first append
    try:
        assert s.append([reading(1, ts=from_us(clock.wall))]).seqs == [2]
        assert all_seqs(s) == [2]
        assert s.stats().dropped == {"max_age": 1}
    finally:
        s.close()


def test_low_disk_drop_newest_refuses_the_batch(tmp_path: Path, clock: FakeClock) -> None:
    cfg = config(tmp_path, min_free_bytes=1 << 60, overflow="drop_newest")
    s = open_spool(cfg, clock)
    try:
        result = s.append([reading(i) for i in range(3)])
        assert result.seqs == []
        assert result.dropped == {"min_free_bytes": 3}
        assert s.depth() == 0
        assert s.stats().dropped == {"min_free_bytes": 3}
    finally:
        s.close()


def test_low_disk_drop_oldest_makes_room(tmp_path: Path, clock: FakeClock) -> None:
    s = open_spool(config(tmp_path), clock)
    s.append([reading(i) for i in range(10)])
    s.close()
    s = open_spool(config(tmp_path, min_free_bytes=1 << 60), clock)
    try:
        result = s.append([reading(i) for i in range(10, 14)])
        assert result.seqs == [11, 12, 13, 14]
        assert result.dropped == {"min_free_bytes": 4}
        assert all_seqs(s) == list(range(5, 15))
        assert s.stats().dropped == {"min_free_bytes": 4}
    finally:
        s.close()


# --------------------------------------------------------- not a spool


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE reading (seq INTEGER PRIMARY KEY, x TEXT)")
    conn.execute("INSERT INTO reading VALUES (1, 'precious')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("kind", ["random", "short", "text", "foreign_sqlite"])
def test_a_file_that_is_not_a_spool_is_refused_and_untouched(
    tmp_path: Path, clock: FakeClock, kind: str
) -> None:
    path = tmp_path / "spool.db"
    if kind == "random":
        path.write_bytes(random.Random(1).randbytes(64 * 1024))
    elif kind == "short":
        path.write_bytes(b"SQLite format 3\x00")
    elif kind == "text":
        path.write_text("just some notes\n" * 100)
    else:
        _foreign_sqlite(path)
    digest, mtime = sha256(path), path.stat().st_mtime_ns
    with pytest.raises(NotASpoolError) as info:
        open_spool(config(tmp_path), clock, integrity_check=True)
    assert info.value.path == path
    assert str(path) in str(info.value)
    assert "left as is" in str(info.value)
    assert sha256(path) == digest
    assert path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool.db"]  # no -wal, no aside


def test_an_empty_file_becomes_a_spool(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "spool.db").touch()
    s = open_spool(config(tmp_path), clock)
    try:
        assert s.append([reading(0)]).seqs == [1]
    finally:
        s.close()
    assert classify_file(tmp_path / "spool.db") == "ours"


def test_a_directory_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "spool.db").mkdir()
    with pytest.raises(SpoolError) as info:
        open_spool(config(tmp_path), clock)
    assert info.value.path == tmp_path / "spool.db"
    assert "is a directory" in str(info.value)


def test_classify_file(tmp_path: Path) -> None:
    assert classify_file(tmp_path / "none") == "missing"
    (tmp_path / "empty").touch()
    assert classify_file(tmp_path / "empty") == "empty"
    _foreign_sqlite(tmp_path / "foreign")
    assert classify_file(tmp_path / "foreign") == "foreign"
    (tmp_path / "junk").write_bytes(b"\x00" * 200)
    assert classify_file(tmp_path / "junk") == "not_sqlite"


# ---------------------------------------------------------- corruption


def _checkpoint(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        conn.close()


def _reading_leaf_pages(path: Path) -> list[int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'reading' AND pagetype = 'leaf' ORDER BY pageno"
        ).fetchall()
    finally:
        conn.close()
    return [int(r[0]) for r in rows]


def _page_size(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def _readable_rows(path: Path, top: int) -> tuple[list[tuple[Any, ...]], int]:
    """Every row of ``reading`` a point lookup can still read, and how many lookups failed."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    found: list[tuple[Any, ...]] = []
    failed = 0
    try:
        for seq in range(1, top + 1):
            try:
                row = conn.execute(
                    f"SELECT {COLUMNS} FROM reading WHERE seq = ?", (seq,)
                ).fetchone()
            except sqlite3.DatabaseError:
                failed += 1
                continue
            if row is not None:
                found.append(row)
    finally:
        conn.close()
    return found, failed


def test_corrupt_spool_is_moved_aside_and_salvaged(tmp_path: Path, clock: FakeClock) -> None:
    cfg = config(tmp_path)
    path = tmp_path / "spool.db"
    s = open_spool(cfg, clock)
    for rnd in range(125):
        s.append([reading(rnd * 8 + i, sensor=f"sensor_{i}") for i in range(8)])
    dead_letter(s, 1000, 0x87, "not authorized")
    s.count_drop("sampler_overflow", 4)
    epoch = s.epoch
    s.close()
    _checkpoint(path)
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0

    leaves = _reading_leaf_pages(path)
    assert len(leaves) >= 10
    victims = [leaves[len(leaves) // 3], leaves[len(leaves) // 2 + 1]]  # interior of the file
    garbage = random.Random(7)
    size = _page_size(path)
    with path.open("r+b") as fh:
        for page in victims:
            fh.seek((page - 1) * size)
            fh.write(garbage.randbytes(size))
    corrupt_digest = sha256(path)

    s = open_spool(cfg, clock, integrity_check=True)
    try:
        asides = sorted(tmp_path.glob("spool.db.corrupt-*"))
        aside = next(p for p in asides if not p.name.endswith(("-wal", "-shm")))
        assert aside.name.startswith("spool.db.corrupt-")
        stamp = aside.name.removeprefix("spool.db.corrupt-")
        assert datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
        assert sha256(aside) == corrupt_digest  # moved, not modified

        expected, failed = _readable_rows(aside, 999)
        lost = 999 - len(expected)
        assert failed == lost > 0
        assert len(expected) > 800

        assert s.integrity_ok()
        assert s.epoch == epoch
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            salvaged = conn.execute(f"SELECT {COLUMNS} FROM reading ORDER BY seq").fetchall()
        finally:
            conn.close()
        assert salvaged == expected  # every readable row, with its original seq
        assert [d.reading.seq for d in s.dead_letters()] == [1000]
        assert s.stats().dropped == {"corrupt": lost, "sampler_overflow": 4}
        assert read_meta(s, "salvaged_from") == str(aside)
        assert s.append([reading(5000)]).seqs == [1001]  # above the old high-water mark
    finally:
        s.close()


def test_corruption_found_while_running_is_a_spool_corrupt_error(
    tmp_path: Path, clock: FakeClock
) -> None:
    cfg = config(tmp_path)
    path = tmp_path / "spool.db"
    s = open_spool(cfg, clock)
    for rnd in range(50):
        s.append([reading(rnd * 8 + i) for i in range(8)])
    s.close()
    _checkpoint(path)
    leaves = _reading_leaf_pages(path)
    size = _page_size(path)
    with path.open("r+b") as fh:
        fh.seek((leaves[len(leaves) // 2] - 1) * size)
        fh.write(b"\xa5" * size)
    s = open_spool(cfg, clock)  # no integrity check: the damage is found by reading
    try:
        with pytest.raises(SpoolCorruptError) as info:
            s.rows_after(0, 1000)
        assert info.value.path == path
        assert not s.integrity_ok()
    finally:
        s.close()


def test_healthy_spool_passes_the_integrity_check_untouched(
    tmp_path: Path, clock: FakeClock
) -> None:
    cfg = config(tmp_path)
    s = open_spool(cfg, clock)
    s.append([reading(i) for i in range(20)])
    s.close()
    s = open_spool(cfg, clock, integrity_check=True)
    try:
        assert s.depth() == 20
        assert list(tmp_path.glob("*.corrupt-*")) == []
    finally:
        s.close()
