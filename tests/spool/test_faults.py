"""Spool faults: a full disk, kill -9 in the middle of writing, concurrent writers."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from support.spooltools import all_seqs
from support.tmpfs import small_tmpfs

from mqttspool.config import SpoolConfig
from mqttspool.errors import SpoolFullError
from mqttspool.reading import Reading
from mqttspool.spool import Spool, open_spool

CRASH_WRITER = Path(__file__).resolve().parents[1] / "support" / "crash_writer.py"
TS = datetime(2026, 11, 26, tzinfo=UTC)


def batch(first: int, n: int = 8) -> list[Reading]:
    return [
        Reading(device="edge-01", sensor="s", metric="m", value=float(first + i), unit="C", ts=TS)
        for i in range(n)
    ]


def integrity(path: Path) -> list[str]:
    conn = sqlite3.connect(path, timeout=10)
    try:
        return [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    finally:
        conn.close()


def rows_by_seq(path: Path) -> dict[int, float]:
    conn = sqlite3.connect(path, timeout=10)
    try:
        rows = conn.execute("SELECT seq, value FROM reading ORDER BY seq").fetchall()
    finally:
        conn.close()
    return {int(s): float(v) for s, v in rows}


# ---------------------------------------------------------------- disk full


@dataclass
class SmallDisk:
    """A 1 MiB filesystem with a filler file that can be deleted to make room."""

    root: Path
    on_tmpfs: bool

    @property
    def filler(self) -> Path:
        return self.root / "filler"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    root = tmp_path / "small"
    with small_tmpfs(root, "1m", fallback=True) as mounted:
        yield SmallDisk(root, on_tmpfs=mounted)  # without: PRAGMA max_page_count stands in


def _limit_pages_if_no_tmpfs(disk: SmallDisk, spool: Spool, pages: int) -> None:
    if not disk.on_tmpfs:
        spool.db.execute_sql(f"PRAGMA max_page_count = {pages}")


def _fill_until_full(spool: Spool) -> tuple[dict[int, float], list[SpoolFullError], int]:
    """Append rounds of 8 until the disk was full 3 times (refused, or oldest rows dropped).

    Returns the value stored under each returned seq, the errors and the next value.
    """
    stored: dict[int, float] = {}
    errors: list[SpoolFullError] = []
    value = 0
    full_events = 0
    for _ in range(5000):
        try:
            result = spool.append(batch(value))
        except SpoolFullError as exc:
            errors.append(exc)
            full_events += 1
        else:
            assert len(result.seqs) == 8
            stored.update(zip(result.seqs, (float(value + i) for i in range(8)), strict=True))
            full_events += "disk_full" in result.dropped
        value += 8
        if full_events == 3:
            break
    return stored, errors, value


@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest"])
def test_disk_full_is_counted_and_leaves_a_sound_spool(
    small_disk: SmallDisk, overflow: Literal["drop_newest", "drop_oldest"]
) -> None:
    assert small_disk.on_tmpfs  # the real filesystem path is what runs here and in CI
    small_disk.filler.write_bytes(b"\0" * 256 * 1024)
    path = small_disk.root / "spool.db"
    cfg = SpoolConfig(path=str(path), min_free_bytes=0, overflow=overflow)
    spool = open_spool(cfg)
    try:
        _limit_pages_if_no_tmpfs(small_disk, spool, 64)
        returned, errors, value = _fill_until_full(spool)
        seqs = sorted(returned)
        # drop_oldest always makes room now (the disk reserve lets the delete commit).
        assert len(errors) == (3 if overflow == "drop_newest" else 0)
        assert len(seqs) > 100
        for exc in errors:
            assert exc.path == path
            assert str(path) in str(exc)
            assert "disk full" in str(exc)
            assert exc.dropped == 8
        refused = sum(e.dropped for e in errors)

        present = rows_by_seq(path)
        assert integrity(path) == ["ok"]
        assert set(present) <= set(seqs)
        assert present == {s: returned[s] for s in present}  # right values, each seq once
        oldest_dropped = sorted(set(seqs) - set(present))
        if overflow == "drop_newest":
            assert oldest_dropped == []
            assert sorted(present) == seqs  # every returned seq, exactly once
        else:
            # What drop_oldest deleted is the oldest part of the queue.
            assert oldest_dropped
            assert all(s < min(present) for s in oldest_dropped)
        assert spool.stats().dropped == {"disk_full": refused + len(oldest_dropped)}

        # Free space: ingest resumes, the counters become durable.
        small_disk.filler.unlink()
        _limit_pages_if_no_tmpfs(small_disk, spool, 1_000_000)
        result = spool.append(batch(value))
        assert result.seqs == list(range(seqs[-1] + 1, seqs[-1] + 9))
    finally:
        spool.close()
    spool = open_spool(cfg, integrity_check=True)
    try:
        assert spool.stats().dropped == {"disk_full": refused + len(oldest_dropped)}
        assert spool.depth() == len(present) + 8
    finally:
        spool.close()
    assert integrity(path) == ["ok"]


def test_disk_full_from_the_first_write(small_disk: SmallDisk) -> None:
    """A spool created on an already full disk reports it cleanly."""
    path = small_disk.root / "spool.db"
    cfg = SpoolConfig(path=str(path), min_free_bytes=0, overflow="drop_newest")
    spool = open_spool(cfg)
    try:
        assert spool.depth() == 0  # connected: the -shm exists, as with a running daemon
        free = os.statvfs(small_disk.root)
        small_disk.filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 4096))
        stored: list[int] = []
        with pytest.raises(SpoolFullError) as info:
            for i in range(100):
                stored += spool.append(batch(i * 8)).seqs
        assert info.value.path == path
        assert info.value.dropped == 8
        assert spool.stats().dropped == {"disk_full": 8}
        small_disk.filler.unlink()
        assert spool.append(batch(10_000)).seqs == list(range(len(stored) + 1, len(stored) + 9))
        assert all_seqs(spool) == list(range(1, len(stored) + 9))
        assert spool.stats().dropped == {"disk_full": 8}
    finally:
        spool.close()
    assert integrity(path) == ["ok"]


# ------------------------------------------------------------- kill -9


def _run_and_kill(path: Path, first: int, rng: random.Random) -> list[dict[str, Any]]:
    """Start a writer, kill it after a random number of commits plus a random delay."""
    proc = subprocess.Popen(
        [sys.executable, str(CRASH_WRITER), str(path), str(first)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    reports: list[dict[str, Any]] = []
    try:
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        for _ in range(rng.randrange(0, 40)):
            line = proc.stdout.readline()
            assert line, "writer died before it was killed"
            reports.append(json.loads(line))
        time.sleep(rng.uniform(0, 0.004))  # the fault lands anywhere within a round
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # Lines written before the kill were committed too.
        reports += [json.loads(line) for line in proc.stdout.read().splitlines() if line]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return reports


def test_kill_9_never_loses_or_duplicates_a_committed_reading(tmp_path: Path) -> None:
    rng = random.Random(20261126)
    path = tmp_path / "spool.db"
    cfg = SpoolConfig(path=str(path), min_free_bytes=0)
    open_spool(cfg).close()  # the file exists before the first kill
    reported: dict[int, float] = {}
    kills = 24
    for run in range(kills):
        first = run * 1_000_000
        for report in _run_and_kill(path, first, rng):
            assert len(report["seqs"]) == len(report["values"]) == 8
            for seq, v in zip(report["seqs"], report["values"], strict=True):
                assert seq not in reported
                reported[seq] = v
        assert integrity(path) == ["ok"]
        stored = rows_by_seq(path)
        # Every reported seq is there exactly once (seq is the key) with its value.
        assert {s: stored.get(s) for s in reported} == reported
        # At most the one round in flight at the kill committed without a report.
        unreported = sorted(set(stored) - set(reported))
        assert len(unreported) <= 8 * (run + 1)
        values = list(stored.values())
        assert len(values) == len(set(values))  # nothing written twice
    spool = open_spool(cfg, integrity_check=True)
    try:
        assert spool.integrity_ok()
        assert list(tmp_path.glob("*.corrupt-*")) == []
        assert set(reported) <= set(all_seqs(spool))
        last = max(all_seqs(spool))
        assert spool.append(batch(-100)).seqs == list(range(last + 1, last + 9))
    finally:
        spool.close()


# ---------------------------------------------------------- concurrency


def test_threads_and_a_second_process_write_together(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    cfg = SpoolConfig(path=str(path), min_free_bytes=0)
    spool = open_spool(cfg)
    lines = tmp_path / "in.jsonl"
    cli_values = [100_000.0 + i for i in range(6000)]
    lines.write_text(
        "".join(
            json.dumps({"sensor": "cli", "metric": "m", "value": v, "ts": "2026-11-26T00:00:00Z"})
            + "\n"
            for v in cli_values
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTTSPOOL_")}
    env |= {"MQTTSPOOL_SPOOL__PATH": str(path), "MQTTSPOOL_SPOOL__MIN_FREE_BYTES": "0"}
    errors: list[BaseException] = []
    appended: list[float] = []
    acked: list[float] = []
    writer_done = threading.Event()

    def writer() -> None:
        try:
            rnd = 0
            # Keep writing for as long as the other process does (at least 250 rounds).
            while rnd < 250 or (enqueue.poll() is None and rnd < 50_000):
                spool.append(batch(rnd * 8))
                appended.extend(float(rnd * 8 + i) for i in range(8))
                rnd += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            writer_done.set()

    def drainer() -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = spool.rows_after(0, 300)
                if rows:
                    spool.settle([r.seq for r in rows])
                    acked.extend(r.value for r in rows)
                elif writer_done.is_set() and enqueue.poll() is not None:
                    rows = spool.rows_after(0, 10_000)  # the last commits of the others
                    spool.settle([r.seq for r in rows])
                    acked.extend(r.value for r in rows)
                    return
                else:
                    writer_done.wait(0.005)  # idle back-off, not synchronisation
        except BaseException as exc:
            errors.append(exc)

    enqueue = subprocess.Popen(
        [sys.executable, "-m", "mqttspool", "enqueue", str(lines)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    threads = [threading.Thread(target=writer), threading.Thread(target=drainer)]
    for t in threads:
        t.start()
    _out, err = enqueue.communicate(timeout=60)
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == []
        assert enqueue.returncode == 0, err
        assert "locked" not in err
        assert "stored 6000 reading(s), rejected 0 line(s)" in err
        assert len(appended) >= 2000
        assert spool.depth() == 0
        assert sorted(acked) == sorted(appended + cli_values)  # none lost, none twice
        assert spool.stats().dropped == {}
        assert integrity(path) == ["ok"]
    finally:
        spool.close()
