"""The power-cut filesystem itself: what a cut keeps and what it loses.

The model is stated in ``tests/support/powercut/fs.py``; each test here checks one
clause of it, then that SQLite in WAL mode behaves on it as on a real disk:
FULL keeps every acknowledged commit, OFF loses them.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from support.powercut import PowerCutMount
from support.powercut.fixture import powercut

__all__ = ["powercut"]  # the fixture, re-exported so pytest finds it here


def write_file(path: Path, data: bytes, *, sync: bool) -> None:
    """Create or overwrite the start of ``path``; fsync it when ``sync``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync a directory (commits the name journal)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reboot(fs: PowerCutMount) -> None:
    """Power cut, then mount the disk again."""
    fs.cut()
    fs.mount()


def test_synced_write_survives_and_unsynced_write_vanishes(powercut: PowerCutMount) -> None:
    path = powercut.path / "data"
    write_file(path, b"durable", sync=True)
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, b"DUR", 0)  # overwrite in place, never synced
    os.pwrite(fd, b"+tail", 7)  # extend, never synced
    os.close(fd)
    assert path.read_bytes() == b"DURable+tail"  # readers see pending writes
    assert os.stat(path).st_size == 12
    reboot(powercut)
    assert path.read_bytes() == b"durable"


def test_fdatasync_makes_a_write_durable(powercut: PowerCutMount) -> None:
    path = powercut.path / "data"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    os.write(fd, b"x" * 10_000)
    os.fdatasync(fd)
    os.ftruncate(fd, 10)  # the shrink is pending until the next sync
    os.close(fd)
    reboot(powercut)
    assert path.read_bytes() == b"x" * 10_000


def test_truncate_is_durable_after_fsync(powercut: PowerCutMount) -> None:
    path = powercut.path / "data"
    write_file(path, b"0123456789", sync=True)
    fd = os.open(path, os.O_RDWR)
    os.ftruncate(fd, 4)
    os.fsync(fd)
    os.close(fd)
    reboot(powercut)
    assert path.read_bytes() == b"0123"


def test_a_shrink_then_grow_syncs_zeros_not_the_old_bytes(powercut: PowerCutMount) -> None:
    path = powercut.path / "data"
    write_file(path, b"x" * 9000, sync=True)
    fd = os.open(path, os.O_RDWR)
    os.ftruncate(fd, 100)
    os.ftruncate(fd, 9000)
    os.fsync(fd)
    os.close(fd)
    reboot(powercut)
    assert path.read_bytes() == b"x" * 100 + b"\0" * 8900


def test_created_file_vanishes_without_any_sync(powercut: PowerCutMount) -> None:
    write_file(powercut.path / "new", b"data", sync=False)
    (powercut.path / "sub").mkdir()
    assert sorted(os.listdir(powercut.path)) == ["new", "sub"]
    reboot(powercut)
    assert os.listdir(powercut.path) == []


def test_an_fsync_commits_earlier_names_but_not_their_data(powercut: PowerCutMount) -> None:
    write_file(powercut.path / "a", b"never synced", sync=False)
    write_file(powercut.path / "b", b"synced", sync=True)  # commits a's name, not a's data
    write_file(powercut.path / "c", b"after the last sync", sync=False)
    reboot(powercut)
    assert sorted(os.listdir(powercut.path)) == ["a", "b"]
    assert (powercut.path / "a").read_bytes() == b""
    assert (powercut.path / "b").read_bytes() == b"synced"


def test_rename_and_unlink_are_undone_unless_committed(powercut: PowerCutMount) -> None:
    write_file(powercut.path / "old", b"1", sync=True)
    write_file(powercut.path / "gone", b"2", sync=True)
    os.rename(powercut.path / "old", powercut.path / "new")
    os.unlink(powercut.path / "gone")
    reboot(powercut)
    assert sorted(os.listdir(powercut.path)) == ["gone", "old"]
    os.rename(powercut.path / "old", powercut.path / "new")
    os.unlink(powercut.path / "gone")
    fsync_dir(powercut.path)
    reboot(powercut)
    assert os.listdir(powercut.path) == ["new"]
    assert (powercut.path / "new").read_bytes() == b"1"


def test_shared_mmap_sees_and_makes_pending_writes(powercut: PowerCutMount) -> None:
    # SQLite's -shm (WAL index) is a shared mmap: it must work, and is never durable.
    path = powercut.path / "shm"
    write_file(path, b"\0" * 8192, sync=True)
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 8192) as view:
        view[0:5] = b"hello"  # no msync: that would be an fsync
        assert os.pread(fh.fileno(), 5, 0) == b"hello"
    assert path.read_bytes()[:5] == b"hello"  # a new handle sees the page cache
    reboot(powercut)
    assert path.read_bytes() == b"\0" * 8192


def test_operations_after_a_cut_fail_and_change_nothing(powercut: PowerCutMount) -> None:
    path = powercut.path / "data"
    write_file(path, b"before", sync=True)
    fd = os.open(path, os.O_WRONLY)
    powercut.cut_filesystem()
    try:
        os.pwrite(fd, b"AFTER!", 0)
        os.fsync(fd)
    except OSError as exc:
        failed = exc.errno
    else:
        failed = 0
    with contextlib.suppress(OSError):  # close flushes: EIO too
        os.close(fd)
    powercut.unmount()
    powercut.mount()
    assert failed != 0
    assert path.read_bytes() == b"before"


def test_an_armed_cut_replaces_the_fsync_it_names(powercut: PowerCutMount) -> None:
    write_file(powercut.path / "other", b"synced", sync=True)
    powercut.arm_cut_at_fsync("data")
    write_file(powercut.path / "other", b"SYNCED", sync=True)  # another name: synced
    fd = os.open(powercut.path / "data", os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"never durable")
    try:
        os.fsync(fd)
    except OSError as exc:
        failed = exc.errno
    else:
        failed = 0
    with contextlib.suppress(OSError):
        os.close(fd)
    powercut.wait_cut(5)
    powercut.finish_cut()
    powercut.mount()
    assert failed != 0
    assert os.listdir(powercut.path) == ["other"]  # the create was never committed
    assert (powercut.path / "other").read_bytes() == b"SYNCED"


# A child that commits one row per transaction and prints the row after COMMIT returned.
_WRITER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=" + sys.argv[2])
db.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, v TEXT)")
n = db.execute("SELECT coalesce(max(n), 0) FROM t").fetchone()[0]
while True:
    n += 1
    db.execute("INSERT INTO t VALUES (?, ?)", (n, "row %d" % n))
    print(n, flush=True)
"""


def start_writer(db: Path, synchronous: str) -> subprocess.Popen[str]:
    """A child committing one row per transaction at ``synchronous``."""
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db), synchronous],
        stdout=subprocess.PIPE,
        text=True,
    )


def committed_rows(proc: subprocess.Popen[str], at_least: int) -> int:
    """Read the writer's acknowledgements until ``at_least`` rows were committed."""
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    last = 0
    while last < at_least:
        line = proc.stdout.readline()
        assert line and time.monotonic() < deadline, "the writer stopped"
        last = int(line)
    return last


def rows(db: Path) -> list[int]:
    """The rows of ``t`` after an integrity check."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")]
    finally:
        conn.close()


def test_sqlite_wal_full_keeps_every_acknowledged_commit(powercut: PowerCutMount) -> None:
    rng = random.Random(13)
    db = powercut.path / "full.db"
    for _ in range(3):
        proc = start_writer(db, "FULL")
        acked = committed_rows(proc, rng.randint(50, 400))
        # Everything printed before the cut is an acknowledged commit; more may follow.
        assert proc.stdout is not None
        powercut.cut(proc)
        acked = max(acked, *(int(line) for line in proc.stdout.read().split()), 0)
        powercut.mount()
        got = rows(db)
        assert got == list(range(1, len(got) + 1))  # no holes
        assert len(got) >= acked, f"{acked} commits acknowledged, {len(got)} survived"


def test_sqlite_wal_off_loses_acknowledged_commits(powercut: PowerCutMount) -> None:
    db = powercut.path / "off.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, v TEXT)")  # FULL: durable
    conn.execute("PRAGMA synchronous=OFF")
    for n in range(1, 101):
        conn.execute("INSERT INTO t VALUES (?, 'x')", (n,))
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (100,)
    powercut.cut_filesystem()
    conn.close()
    powercut.unmount()
    powercut.mount()
    assert rows(db) == []  # 100 acknowledged commits, none survived


def test_sqlite_wal_normal_loses_commits_after_the_last_sync(powercut: PowerCutMount) -> None:
    # NORMAL syncs the WAL only at checkpoints: commits since then are lost.
    db = powercut.path / "normal.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t VALUES (1, 'x')")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # syncs the WAL and the database
    for n in range(2, 51):
        conn.execute("INSERT INTO t VALUES (?, 'x')", (n,))
    powercut.cut_filesystem()
    conn.close()
    powercut.unmount()
    powercut.mount()
    assert rows(db) == [1]
