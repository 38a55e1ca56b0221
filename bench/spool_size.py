"""Bytes on disk per queued reading, and how long a blackout the default bounds hold.

Usage::

    python bench/spool_size.py [--rows 1000000] [--dir DIR]

Fills a fresh spool with ``--rows`` readings shaped like a running sampler's
(device ``edge-01``, sensor ``sim``, metrics temperature/humidity with units,
clock-stamped: boot id and monotonic time per row), checkpoints the WAL and
measures the files. The raw baseline, from the same run, is a plain sqlite3
table holding only what a reading is (seq, device, sensor, metric, value,
unit, ts) in the same WAL mode. Then prints, for 1, 10 and 100 readings/s,
the bytes per day and the days of blackout ``spool.max_rows`` holds (the disk
guard ``spool.min_free_bytes`` decides beyond that).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading, from_us
from mqttspool.spool import open_spool

METRICS = (("temperature", "°C", 21.37), ("humidity", "%RH", 44.72))
BATCH = 1000
RATES = (1, 10, 100)


def _row(i: int, t0: int) -> tuple[str, str, float, int]:
    metric, unit, base = METRICS[i % 2]
    return metric, unit, base + (i % 97) / 100, t0 + i * 100_000


def fill_spool(path: Path, rows: int) -> int:
    """mqttspool's spool with ``rows`` readings; its bytes on disk (WAL checkpointed)."""
    cfg = SpoolConfig(path=str(path), synchronous="normal", max_rows=10**9, min_free_bytes=0)
    spool = open_spool(cfg)
    t0 = time.time_ns() // 1000
    try:
        for start in range(0, rows, BATCH):
            batch = []
            for i in range(start, min(rows, start + BATCH)):
                metric, unit, value, ts = _row(i, t0)
                batch.append(
                    Reading(
                        device="edge-01",
                        sensor="sim",
                        metric=metric,
                        value=value,
                        unit=unit,
                        ts=from_us(ts),
                        time_synced=True,
                    )
                )
            spool.append(batch, clock_stamped=True)
    finally:
        spool.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return _size(path)


def fill_raw(path: Path, rows: int) -> int:
    """The raw baseline: a minimal table, same rows, same WAL mode."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(
        "CREATE TABLE reading (seq INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT,"
        " sensor TEXT, metric TEXT, value REAL, unit TEXT, ts_us INTEGER)"
    )
    t0 = time.time_ns() // 1000
    for start in range(0, rows, BATCH):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO reading (device, sensor, metric, value, unit, ts_us)"
            " VALUES ('edge-01', 'sim', ?, ?, ?, ?)",
            [
                (m, v, u, ts)
                for m, u, v, ts in (_row(i, t0) for i in range(start, min(rows, start + BATCH)))
            ],
        )
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return _size(path)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        ours = fill_spool(Path(tmp) / "spool.db", args.rows) / args.rows
        raw = fill_raw(Path(tmp) / "raw.db", args.rows) / args.rows
    max_rows = SpoolConfig().max_rows
    print(f"rows: {args.rows:,}")
    print(f"bytes per reading: mqttspool {ours:.1f}, raw sqlite3 {raw:.1f}, ratio {ours / raw:.2f}")
    print(f"default spool.max_rows {max_rows:,} = {max_rows * ours / 1e6:,.0f} MB on disk")
    for rate in RATES:
        per_day = rate * 86_400
        print(
            f"{rate:>3} readings/s: {per_day * ours / 1e6:,.0f} MB/day;"
            f" max_rows holds {max_rows / per_day:,.1f} days of blackout"
        )


if __name__ == "__main__":
    main()
