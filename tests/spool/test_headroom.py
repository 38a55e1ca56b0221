"""A full disk: the spool keeps headroom to settle and drop, and every drop is persisted.
Runs on a real 2 MiB tmpfs (the tests run as root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
from support.spooltools import all_seqs
from support.tmpfs import small_tmpfs

from mqttspool.config import SpoolConfig
from mqttspool.errors import SpoolFullError
from mqttspool.reading import Reading
from mqttspool.spool import Spool, open_spool


def batch(first: int, n: int = 8) -> list[Reading]:
    return [
        Reading(
            device="edge-01",
            sensor="sim",
            metric="temperature",
            value=float(first + i),
            ts=datetime(2026, 11, 26, tzinfo=UTC),
            time_synced=True,
        )
        for i in range(n)
    ]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small", "2m"):
        yield tmp_path / "small"


def _fill_disk(root: Path) -> Path:
    """Write a filler file until the filesystem refuses another byte."""
    filler = root / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def _cfg(root: Path, overflow: Literal["drop_newest", "drop_oldest"]) -> SpoolConfig:
    return SpoolConfig(path=str(root / "spool.db"), min_free_bytes=0, overflow=overflow)


def _refuse_until_full(spool: Spool, first: int) -> int:
    """Append until the disk refuses a round; returns how many readings were refused."""
    for i in range(2000):
        try:
            spool.append(batch(first + i * 8))
        except SpoolFullError as exc:
            return exc.dropped
    raise AssertionError("the disk never filled")


def test_settle_works_on_a_full_disk_and_drops_are_persisted(disk: Path) -> None:
    cfg = _cfg(disk, "drop_newest")
    spool = open_spool(cfg)
    try:
        assert spool.reserve.held() and spool.reserve.size == 128 * 1024
        queued = spool.append(batch(0, 500)).seqs
        filler = _fill_disk(disk)
        refused = _refuse_until_full(spool, 1000)
        refused += _refuse_until_full(spool, 2000)  # still full: refused without writing
        assert not spool.reserve.held()
        queued = all_seqs(spool)
        spool.settle(queued[:300])  # the PUBACKs of a drain: deletes must commit
        spool.settle(queued[300:])
        assert spool.depth() == 0
        # Another process (``status``) sees the exact count while the disk is still full.
        other = open_spool(cfg, create=False)
        assert other.stats().dropped == {"disk_full": refused}
        other.close()
        filler.unlink()
        assert spool.append(batch(5000)).seqs  # space is back: ingest resumes
        assert spool.reserve.held()  # and the headroom is held again
    finally:
        spool.close()
    spool = open_spool(cfg, integrity_check=True)
    try:
        assert spool.stats().dropped == {"disk_full": refused}
        assert spool.depth() == 8
    finally:
        spool.close()


def test_drop_oldest_frees_rows_on_a_full_disk(disk: Path) -> None:
    cfg = _cfg(disk, "drop_oldest")
    spool = open_spool(cfg)
    try:
        stored = spool.append(batch(0, 2000)).seqs
        _fill_disk(disk)
        # The disk is full: each round makes room by dropping the oldest (once the
        # slack in the files' last blocks and the recycled WAL are used up).
        for i in range(400):
            stored += spool.append(batch(10_000 + i * 8)).seqs
            if len(stored) > len(all_seqs(spool)) + 8:
                break
        present = all_seqs(spool)
        lost = sorted(set(stored) - set(present))
        assert lost and lost == stored[: len(lost)]  # the oldest, and only those
        assert set(present) == set(stored) - set(lost)
        assert spool.stats().dropped == {"disk_full": len(lost)}
    finally:
        spool.close()
    spool = open_spool(cfg)
    try:
        assert spool.stats().dropped == {"disk_full": len(lost)}
        assert all_seqs(spool) == present
    finally:
        spool.close()


def test_a_short_lived_writer_persists_what_it_counted(disk: Path) -> None:
    """``enqueue`` on a full disk: the readings it reports as dropped are counted on disk."""
    cfg = _cfg(disk, "drop_newest")
    daemon = open_spool(cfg)
    daemon.append(batch(0, 100))
    _fill_disk(disk)
    enqueue = open_spool(cfg, create=False)
    refused = stored = 0
    for i in range(20):
        # The first rounds may still fit in the last, partly used block of the WAL.
        try:
            stored += len(enqueue.append(batch(1000 + i * 8)).seqs)
        except SpoolFullError as exc:
            refused += exc.dropped
    enqueue.close()
    assert refused >= 120 and refused + stored == 160
    assert daemon.stats().dropped == {"disk_full": refused}
    daemon.close()
    assert os.path.exists(cfg.path)


def test_enqueue_on_a_full_disk_counts_what_it_says(disk: Path) -> None:
    """Black box: ``enqueue`` refuses lines on a full disk and ``status`` shows them counted."""
    cfg = _cfg(disk, "drop_newest")
    daemon_was_here = open_spool(cfg)
    assert daemon_was_here.reserve.held()
    daemon_was_here.close()
    _fill_disk(disk)
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("mqttspool_")}
    env |= {"MQTTSPOOL_SPOOL__PATH": cfg.path, "MQTTSPOOL_SPOOL__MIN_FREE_BYTES": "0"}
    env["MQTTSPOOL_SPOOL__OVERFLOW"] = "drop_newest"
    lines = "".join(f'{{"sensor":"s","metric":"m","value":{i}}}\n' for i in range(300))

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mqttspool", *args],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    enqueue = cli("enqueue", "-", stdin=lines)
    assert enqueue.returncode == 1, enqueue.stderr
    assert "stored 0 reading(s), rejected 300 line(s)" in enqueue.stderr
    assert "counted as dropped, reason disk_full" in enqueue.stderr
    status = cli("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["dropped"] == {"disk_full": 300}
