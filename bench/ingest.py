"""Ingest throughput: ``Spool.append`` and ``mqttspool enqueue`` vs raw sqlite3, same run.

Usage::

    python bench/ingest.py [--rounds 2000] [--lines 100000]

Measures, each against a raw ``sqlite3`` baseline doing the same inserts into
the same table shape (``INTEGER PRIMARY KEY AUTOINCREMENT``, WAL, same
``synchronous``, one transaction per round):

(a) ``Spool.append`` in rounds of 8 readings at ``synchronous=FULL``;
(b) the same at ``synchronous=NORMAL``;
(c) ``mqttspool enqueue`` on N JSON lines (whole subprocess) vs raw sqlite3
    parsing the JSON and inserting in batches of 2000;
(d) fsync + fdatasync calls per round (under ``strace -f -c``, if present);
(e) spool bytes per reading (file + WAL after a checkpoint, over the rows).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mqttspool.config import SpoolConfig  # noqa: E402
from mqttspool.reading import Reading, validate_reading  # noqa: E402
from mqttspool.spool import open_spool  # noqa: E402

ROUND = 8
BATCH = 2000
RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS reading (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, sensor TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL NOT NULL, unit TEXT, ts_us INTEGER NOT NULL,
    time_synced INTEGER NOT NULL, boot_id TEXT NOT NULL, mono_ns INTEGER NOT NULL)
"""
RAW_INSERT = (
    "INSERT INTO reading (device, sensor, metric, value, unit, ts_us, time_synced, boot_id,"
    " mono_ns) VALUES (?,?,?,?,?,?,?,?,?)"
)


def make_rounds(n: int) -> list[list[Reading]]:
    """``n`` rounds of 8 validated readings (validation is not part of the timing)."""
    t0 = datetime(2026, 11, 26, tzinfo=UTC)
    return [
        [
            Reading(
                device="edge-01",
                sensor=f"sensor_{i % 4}",
                metric=f"metric_{i}",
                value=r * 0.5 + i,
                unit="°C",
                ts=t0 + timedelta(seconds=r),
            )
            for i in range(ROUND)
        ]
        for r in range(n)
    ]


def spool_append(path: Path, rounds: list[list[Reading]], sync: str) -> float:
    """Seconds for ``Spool.append`` of every round."""
    spool = open_spool(SpoolConfig(path=str(path), synchronous=sync))  # type: ignore[arg-type]
    try:
        spool.append(rounds[0])  # connect, warm up
        start = time.perf_counter()
        for batch in rounds[1:]:
            spool.append(batch)
        return time.perf_counter() - start
    finally:
        spool.close()


def raw_connect(path: Path, sync: str) -> sqlite3.Connection:
    """The baseline's connection: autocommit, WAL, the given synchronous level."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync.upper()}")
    conn.execute(RAW_SCHEMA)
    return conn


def raw_append(path: Path, rounds: list[list[Reading]], sync: str) -> float:
    """Seconds for the same inserts with plain sqlite3, one transaction per round."""
    conn = raw_connect(path, sync)
    boot = "bench-boot"
    try:

        def one(batch: list[Reading]) -> None:
            mono = time.monotonic_ns()
            rows = [
                (r.device, r.sensor, r.metric, r.value, r.unit, r.ts_us, r.time_synced, boot, mono)
                for r in batch
            ]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(RAW_INSERT, rows)
            conn.execute("COMMIT")

        one(rounds[0])
        start = time.perf_counter()
        for batch in rounds[1:]:
            one(batch)
        return time.perf_counter() - start
    finally:
        conn.close()


def bytes_per_reading(path: Path) -> float:
    """(file + WAL) bytes after a TRUNCATE checkpoint, over the number of rows."""
    conn = sqlite3.connect(str(path))
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = int(conn.execute("SELECT COUNT(*) FROM reading").fetchone()[0])
    finally:
        conn.close()
    wal = Path(f"{path}-wal")
    size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return size / max(rows, 1)


def json_lines(n: int) -> str:
    """``n`` enqueue input lines."""
    return "".join(
        json.dumps(
            {
                "sensor": f"s{i % 4}",
                "metric": "temperature",
                "value": i * 0.25,
                "unit": "°C",
                "ts": "2026-11-26T00:40:00.123Z",
            }
        )
        + "\n"
        for i in range(n)
    )


def enqueue_cli(workdir: Path, lines: Path) -> float:
    """Seconds for the whole ``mqttspool enqueue FILE`` subprocess."""
    env = {
        "PATH": "/usr/bin:/bin",
        "MQTTSPOOL_SPOOL__PATH": str(workdir / "cli.db"),
        "MQTTSPOOL_DEVICE__ID": "edge-01",
    }
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mqttspool", "enqueue", str(lines)],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def enqueue_raw(workdir: Path, lines: Path) -> float:
    """Seconds for raw sqlite3: parse each JSON line, insert in batches of 2000."""
    start = time.perf_counter()
    conn = raw_connect(workdir / "raw-enqueue.db", "full")
    boot = "bench-boot"
    batch: list[tuple[object, ...]] = []

    def flush() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(RAW_INSERT, batch)
        conn.execute("COMMIT")
        batch.clear()

    with lines.open(encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            ts = datetime.fromisoformat(doc["ts"])
            ts_us = int(ts.timestamp() * 1_000_000)
            batch.append(
                ("edge-01", doc["sensor"], doc["metric"], float(doc["value"]), doc["unit"],
                 ts_us, True, boot, time.monotonic_ns())
            )  # fmt: skip
            if len(batch) >= BATCH:
                flush()
    if batch:
        flush()
    conn.close()
    return time.perf_counter() - start


def enqueue_validated_share(lines: Path, n: int) -> float:
    """Seconds for pydantic validation alone of the first ``n`` lines (explains (c))."""
    docs = [json.loads(x) for x in lines.read_text(encoding="utf-8").splitlines()[:n]]
    start = time.perf_counter()
    for doc in docs:
        validate_reading({**doc, "device": "edge-01"})
    return time.perf_counter() - start


# ------------------------------------------------------------- fsync count


def child_loop(kind: str, path: Path, rounds: int, sync: str) -> None:
    """Run one append loop (called under strace)."""
    data = make_rounds(rounds + 1)
    if kind == "spool":
        spool_append(path, data, sync)
    else:
        raw_append(path, data, sync)


def fsyncs_per_round(kind: str, workdir: Path, rounds: int, sync: str) -> float | None:
    """fsync + fdatasync calls per round under ``strace -f -c``, minus a 0-round run."""
    if shutil.which("strace") is None:
        return None

    def count(n: int, tag: str) -> int:
        out = workdir / f"strace-{kind}-{tag}.txt"
        path = workdir / f"strace-{kind}-{tag}.db"
        subprocess.run(
            ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(out),
             sys.executable, __file__, "--child", kind, "--child-path", str(path),
             "--rounds", str(n), "--sync", sync],
            check=True,
            capture_output=True,
        )  # fmt: skip
        calls = 0
        for line in out.read_text().splitlines():
            parts = line.split()
            if parts and parts[-1] in ("fsync", "fdatasync"):
                calls += int(parts[3])
        return calls

    base = count(0, "base")
    return (count(rounds, "run") - base) / rounds


# ------------------------------------------------------------------ report


def ratio(a: float, b: float) -> str:
    return f"{a / b * 100:.0f}%" if b else "-"


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="rounds of 8 for (a)/(b)")
    parser.add_argument("--lines", type=int, default=100_000, help="JSON lines for (c)")
    parser.add_argument("--strace-rounds", type=int, default=200)
    parser.add_argument("--child", choices=["spool", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--child-path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sync", default="full", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_loop(args.child, args.child_path, args.rounds, args.sync)
        return

    with tempfile.TemporaryDirectory(prefix="mqttspool-bench-", dir=ROOT) as tmp:
        work = Path(tmp)
        data = make_rounds(args.rounds + 1)
        n = args.rounds
        print(f"ingest benchmark: {n} rounds of {ROUND} readings; {args.lines} JSON lines")
        print(f"python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}\n")
        print(f"{'measurement':<44}{'mqttspool':>14}{'raw sqlite3':>14}{'ratio':>8}")
        print("-" * 80)
        for sync in ("full", "normal"):
            spool_s = spool_append(work / f"spool-{sync}.db", data, sync)
            raw_s = raw_append(work / f"raw-{sync}.db", data, sync)
            label = "(a)" if sync == "full" else "(b)"
            print(
                f"{label} append rounds/s, synchronous={sync.upper():<7}"
                f"{n / spool_s:>13,.0f} {n / raw_s:>13,.0f} {ratio(raw_s, spool_s):>8}"
            )
            print(f"    readings/s{'':<32}{n * ROUND / spool_s:>14,.0f}{n * ROUND / raw_s:>14,.0f}")
        lines = work / "in.jsonl"
        lines.write_text(json_lines(args.lines), encoding="utf-8")
        cli_s = enqueue_cli(work, lines)
        raw_s = enqueue_raw(work, lines)
        print(
            f"(c) enqueue {args.lines} lines, s (whole command){'':<3}"
            f"{cli_s:>11.2f}{raw_s:>14.2f} {ratio(raw_s, cli_s):>8}"
        )
        print(f"    lines/s{'':<35}{args.lines / cli_s:>14,.0f}{args.lines / raw_s:>14,.0f}")
        share = enqueue_validated_share(lines, min(args.lines, 20_000))
        per_line_us = share / min(args.lines, 20_000) * 1e6
        print(f"    of which pydantic validation: {per_line_us:.1f} us/line")
        r = args.strace_rounds
        spool_f = fsyncs_per_round("spool", work, r, "full")
        raw_f = fsyncs_per_round("raw", work, r, "full")
        if spool_f is None or raw_f is None:
            print("(d) fsync+fdatasync per round: strace not installed")
        else:
            print(f"(d) fsync+fdatasync per round (FULL){'':<8}{spool_f:>14.2f}{raw_f:>14.2f}")
        spool_b = bytes_per_reading(work / "spool-full.db")
        raw_b = bytes_per_reading(work / "raw-full.db")
        print(f"(e) spool bytes per reading{'':<17}{spool_b:>14.1f}{raw_b:>14.1f}")
        print("\nratio = mqttspool speed as a share of raw sqlite3 (target >= 50% for append)")


if __name__ == "__main__":
    main()
