"""``Spool.stats()`` and ``depth()`` read the row counters (no table scan) and stay exact
through every change of the queue: appends, deletes, drops, dead letters, requeue, purge,
expiry, salvage."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes.clock import FakeClock

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading, from_us
from mqttspool.spool import Rejection, Spool, open_spool, recover_spool

NOW_US = FakeClock().wall_us()


def _cfg(path: Path, **over: object) -> SpoolConfig:
    return SpoolConfig.model_validate(
        {"path": str(path), "min_free_bytes": 0, "max_rows": 50, **over}
    )


def _batch(n: int, ts_us: int = NOW_US) -> list[Reading]:
    return [
        Reading(
            device="d", sensor="s", metric="m", value=float(i), ts=from_us(ts_us), time_synced=True
        )
        for i in range(n)
    ]


def _truth(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        queued = conn.execute("SELECT COUNT(*) FROM reading").fetchone()[0]
        dead = conn.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
    return int(queued), int(dead)


def _check(spool: Spool, step: str) -> None:
    stats = spool.stats()
    assert (stats.depth, stats.dead_letters) == _truth(spool.path), step
    assert spool.depth() == stats.depth, step


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool(tmp_path: Path, clock: FakeClock) -> Iterator[Spool]:
    s = open_spool(_cfg(tmp_path / "spool.db", max_age=3600), clock)
    yield s
    s.close()


def test_counts_stay_exact_through_every_change(
    spool: Spool, clock: FakeClock, tmp_path: Path
) -> None:
    seqs = spool.append(_batch(30)).seqs
    _check(spool, "append")
    spool.settle(seqs[:5])
    _check(spool, "ack")
    spool.settle([], [Rejection(s, 0x87, "not authorized") for s in seqs[5:9]])
    _check(spool, "dead letters")
    spool.append(_batch(40))  # 26 + 40 > 50: drop_oldest
    _check(spool, "drop_oldest")
    spool.append(_batch(80))  # the batch alone is over max_rows
    _check(spool, "batch over max_rows")
    assert spool.requeue(None) == 4
    _check(spool, "requeue")
    spool.settle([], [Rejection(spool.rows_after(0, 1)[0].seq, 0x99, "bad")])
    assert spool.purge(None) == 1
    _check(spool, "purge")
    old = from_us(clock.wall_us() - 7200 * 1_000_000)
    spool.append([r.model_copy(update={"ts": old}) for r in _batch(3)])
    assert spool.expire() == 3
    _check(spool, "expire")
    other = open_spool(_cfg(spool.path, overflow="drop_newest"), clock)  # another writer
    try:
        other.append(_batch(10))
        _check(other, "drop_newest")
        _check(spool, "seen from the first writer")
    finally:
        other.close()
    spool.close()
    salvaged = recover_spool(_cfg(tmp_path / "spool.db"), clock)
    try:
        _check(salvaged, "salvage")
    finally:
        salvaged.close()


def test_stats_and_depth_do_not_scan_the_queue(spool: Spool) -> None:
    spool.append(_batch(20))
    statements: list[str] = []
    conn = spool.db.connection()
    trace: Callable[[str], None] = statements.append
    conn.set_trace_callback(trace)
    try:
        spool.stats()
        spool.depth()
    finally:
        conn.set_trace_callback(None)
    assert [s for s in statements if "COUNT(" in s.upper()] == []
