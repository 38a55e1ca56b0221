"""fsync/fdatasync calls per sampling round at ``synchronous = FULL``, measured with strace.

Usage::

    python bench/sampler_fsync.py [--rounds 200] [--sensors 3]

Each mode runs in a child process under ``strace -f -c -e trace=fsync,fdatasync``;
a run with zero rounds is subtracted so spool creation does not count:

* ``sampler``: mqttspool's :class:`Sampler` with ``--sensors`` simulated
  sensors (2 readings each), one ``Spool.append`` per round;
* ``raw``: the baseline, plain sqlite3 in WAL mode with synchronous=FULL,
  one ``executemany`` transaction per round with the same number of rows;
* ``per_reading``: what one transaction per reading would cost (for contrast).
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fakes.clock import FakeClock, FakeClockSync  # noqa: E402

from mqttspool.config import SpoolConfig  # noqa: E402
from mqttspool.counters import Counters  # noqa: E402
from mqttspool.reading import Reading  # noqa: E402
from mqttspool.sampler import Sampler  # noqa: E402
from mqttspool.sensors.base import Sensor  # noqa: E402
from mqttspool.sensors.simulated import SimulatedSensor  # noqa: E402
from mqttspool.spool import open_spool  # noqa: E402

MODES = ("sampler", "raw", "per_reading")
READINGS_PER_SENSOR = 2


def run_sampler(db: Path, rounds: int, sensors: int) -> None:
    """``rounds`` sampler steps, every sensor due each time."""
    clock = FakeClock()
    spool = open_spool(SpoolConfig(path=str(db), synchronous="full"), clock=clock)
    fleet: list[Sensor] = [SimulatedSensor(f"sim{i}", 1.0, seed=i) for i in range(sensors)]
    sampler = Sampler(fleet, "bench", spool, Counters(), clock, FakeClockSync(True))
    for _ in range(rounds):
        sampler.step()
        clock.advance(1.0)
    spool.close()


def run_per_reading(db: Path, rounds: int, sensors: int) -> None:
    """The same readings, one ``append`` (transaction) per reading."""
    spool = open_spool(SpoolConfig(path=str(db), synchronous="full"), clock=FakeClock())
    now = datetime.now(UTC)
    for _ in range(rounds):
        for i in range(sensors * READINGS_PER_SENSOR):
            spool.append([Reading(device="bench", sensor=f"sim{i}", metric="m", value=1.0, ts=now)])
    spool.close()


def run_raw(db: Path, rounds: int, sensors: int) -> None:
    """Plain sqlite3: WAL, synchronous=FULL, one transaction per round."""
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS reading (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " device TEXT, sensor TEXT, metric TEXT, value REAL, unit TEXT, ts_us INTEGER,"
        " time_synced INTEGER, boot_id TEXT, mono_ns INTEGER)"
    )
    rows = [
        ("bench", f"sim{i}", "m", 1.0, "u", 0, 1, "b", 0)
        for i in range(sensors * READINGS_PER_SENSOR)
    ]
    for _ in range(rounds):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO reading (device, sensor, metric, value, unit, ts_us, time_synced,"
            " boot_id, mono_ns) VALUES (?,?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.execute("COMMIT")
    conn.close()


def count_syncs(mode: str, rounds: int, sensors: int, workdir: Path) -> int:
    """fsync + fdatasync calls of one child process running ``mode``."""
    db = workdir / f"{mode}-{rounds}.db"
    out = workdir / f"{mode}-{rounds}.strace"
    cmd = [
        "strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(out),
        sys.executable, str(Path(__file__).resolve()), "--child", mode,
        "--rounds", str(rounds), "--sensors", str(sensors), "--db", str(db),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    total = 0
    for line in out.read_text().splitlines():
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)$", line)
        if match:
            total += int(match.group(1))
    return total


def syncs_per_round(mode: str, rounds: int, sensors: int) -> float:
    """(syncs with ``rounds`` rounds - syncs with none) / rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = count_syncs(mode, 0, sensors, work)
        loaded = count_syncs(mode, rounds, sensors, work)
    return (loaded - base) / rounds


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table (or run one child mode)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--sensors", type=int, default=3)
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        runner = {"sampler": run_sampler, "raw": run_raw, "per_reading": run_per_reading}
        runner[args.child](args.db, args.rounds, args.sensors)
        return 0
    readings = args.sensors * READINGS_PER_SENSOR
    print(f"{args.rounds} rounds, {args.sensors} sensors, {readings} readings per round")
    raw = syncs_per_round("raw", args.rounds, args.sensors)
    for mode in MODES:
        value = raw if mode == "raw" else syncs_per_round(mode, args.rounds, args.sensors)
        ratio = value / raw if raw else float("nan")
        print(f"  {mode:<12} {value:8.3f} fsync+fdatasync per round   ({ratio:.2f}x raw)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
