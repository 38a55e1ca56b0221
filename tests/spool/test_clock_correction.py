"""correct_clock re-times only what this boot's unsynchronised clock stamped."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from fakes.clock import FakeClock
from support.spooltools import read_meta

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading
from mqttspool.spool import SCHEMA_VERSION, open_spool

EXPLICIT = datetime(2021, 6, 1, 12, 0, tzinfo=UTC)
EXPLICIT_US = int(EXPLICIT.timestamp()) * 1_000_000


def _reading(value: float) -> Reading:
    return Reading(device="d", sensor="s", metric="m", value=value, ts=EXPLICIT, time_synced=False)


def _rows(path: Path) -> list[tuple[float, int, int]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT value, ts_us, time_synced FROM reading ORDER BY seq")
        return [(float(r[0]), int(r[1]), int(r[2])) for r in rows.fetchall()]


def test_explicit_timestamps_survive_clock_correction(tmp_path: Path) -> None:
    clock = FakeClock()
    s = open_spool(SpoolConfig(path=str(tmp_path / "spool.db"), min_free_bytes=0), clock)
    try:
        s.append([_reading(1.0)])  # enqueue line with its own ts (default: not ours)
        s.append([_reading(2.0)], clock_stamped=True)  # stamped by our unsynced clock
        s.append([_reading(3.0), _reading(4.0)], clock_stamped=[False, True])
        clock.advance(2)
        assert s.correct_clock(clock.boot, 9_000_000_000_000, clock.mono) == 2
        restamped = 9_000_000_000_000 - 2_000_000
        assert _rows(s.path) == [
            (1.0, EXPLICIT_US, 0),
            (2.0, restamped, 1),
            (3.0, EXPLICIT_US, 0),
            (4.0, restamped, 1),
        ]
        # Another boot's rows are never re-timed, stamped or not.
        s.append([_reading(5.0)], clock_stamped=True)
        assert s.correct_clock("another-boot", 9_000_000_000_000, clock.mono) == 0
    finally:
        s.close()


def test_a_schema_1_spool_is_migrated_and_its_rows_keep_their_time(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    clock = FakeClock()
    cfg = SpoolConfig(path=str(path), min_free_bytes=0)
    s = open_spool(cfg, clock)
    s.close()
    # Rebuild the table as schema 1 had it and put one unsynced row of this boot in it.
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE reading DROP COLUMN clock_stamped")
        conn.execute("DELETE FROM meta WHERE key LIKE 'count.%'")
        conn.execute(
            "INSERT INTO reading (device, sensor, metric, value, unit, ts_us, time_synced,"
            " boot_id, mono_ns) VALUES ('d', 's', 'm', 7.0, NULL, ?, 0, ?, ?)",
            (EXPLICIT_US, clock.boot, clock.mono),
        )
        conn.execute("PRAGMA user_version = 1")
    s = open_spool(cfg, clock)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert read_meta(s, "count.reading") == "1"
        assert s.correct_clock(clock.boot, 9_000_000_000_000, clock.mono) == 0
        assert _rows(path) == [(7.0, EXPLICIT_US, 0)]
        assert s.append([_reading(8.0)], clock_stamped=True).seqs == [2]
        assert s.correct_clock(clock.boot, 9_000_000_000_000, clock.mono) == 1
    finally:
        s.close()
