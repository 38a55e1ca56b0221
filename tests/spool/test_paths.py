"""Operator mistakes with the spool path: read-only commands never create, foreign files stay
untouched, errors name the path (the mistakes an operator makes most)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes.clock import FakeClock
from support.daemon import clean_env, run_cli
from support.spooltools import read_meta

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading
from mqttspool.spool import Rejection, Spool, open_spool


def run(cwd: Path, spool: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = clean_env(MQTTSPOOL_SPOOL__PATH=str(spool), MQTTSPOOL_DEVICE__ID="edge-01")
    return run_cli(list(args), env, stdin=stdin, cwd=cwd)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _beside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_status_of_a_zero_byte_file_leaves_it_alone(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    db.touch()
    proc = run(tmp_path, db, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["depth"] == 0
    assert db.stat().st_size == 0
    assert _beside(db) == ["spool.db"]


def test_dead_letters_list_on_a_mistyped_path_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "typo" / "spool.db"
    for action in (["list"], ["requeue", "--all"], ["purge", "--all"]):
        proc = run(tmp_path, db, "dead-letters", *action)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr == (
            f"mqttspool: error: spool {db}: no spool here (missing file); nothing was"
            " created. Check spool.path\n"
        )
    assert not (tmp_path / "typo").exists()


def test_a_directory_as_spool_path_is_named(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    db.mkdir()
    for args in (["status"], ["dead-letters", "list"], ["enqueue", "-"]):
        proc = run(tmp_path, db, *args, stdin='{"sensor":"s","metric":"m","value":1}\n')
        assert proc.returncode == 1, (args, proc.stderr)
        assert f"spool {db}: is a directory; set spool.path to a file" in proc.stderr
    assert list(db.iterdir()) == []


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("content", ["sqlite", "text"])
def test_a_symlink_to_a_file_that_is_not_ours_is_never_touched(
    tmp_path: Path, content: str
) -> None:
    target = tmp_path / "other" / "data.db"
    target.parent.mkdir()
    if content == "sqlite":
        _foreign(target)
    else:
        target.write_text("not a database\n")
    before = _digest(target)
    db = tmp_path / "spool.db"
    db.symlink_to(target)
    for args in (["status"], ["dead-letters", "list"], ["enqueue", "-"], ["drain"]):
        proc = run(tmp_path, db, *args, stdin='{"sensor":"s","metric":"m","value":1}\n')
        assert proc.returncode == 1, (args, proc.stderr)
        assert f"spool {db}: is " in proc.stderr and "left as is" in proc.stderr
    assert _digest(target) == before
    assert _beside(target) == ["data.db"]


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only mount (root ignores mode bits, so chmod would prove nothing)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"cannot mount a tmpfs (these tests need root): {exc}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_read_only_directory_is_named_with_what_to_do(readonly_dir: Path) -> None:
    db = readonly_dir / "spool.db"
    proc = run(
        readonly_dir.parent, db, "enqueue", "-", stdin='{"sensor":"s","metric":"m","value":1}\n'
    )
    assert proc.returncode == 0, proc.stderr
    subprocess.run(["mount", "-o", "remount,ro", str(readonly_dir)], check=True)
    proc = run(
        readonly_dir.parent, db, "enqueue", "-", stdin='{"sensor":"s","metric":"m","value":2}\n'
    )
    assert proc.returncode == 1
    assert f"spool {db}: " in proc.stderr
    assert "writable by this user" in proc.stderr
    assert "Traceback" not in proc.stderr


def _reading(i: int) -> Reading:
    return Reading(
        device="d",
        sensor="s",
        metric="m",
        value=float(i),
        ts=datetime(2026, 11, 26, tzinfo=UTC),
        time_synced=True,
    )


class _Drainer(threading.Thread):
    """The daemon's side: keeps appending and settling until stopped and empty."""

    def __init__(self, spool: Spool) -> None:
        super().__init__()
        self.spool = spool
        self.stop = threading.Event()
        self.delivered: list[int] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            n = 200
            while not self.stop.is_set() or self.spool.depth():
                self.spool.append([_reading(n)])
                n += 1
                rows = self.spool.rows_after(0, 50)
                self.spool.settle([r.seq for r in rows])
                self.delivered.extend(r.seq for r in rows)
        except BaseException as exc:
            self.errors.append(exc)


def test_requeue_and_purge_while_a_writer_drains(tmp_path: Path) -> None:
    """Two Spool objects on one file (the daemon and ``dead-letters``): counts stay exact."""
    cfg = SpoolConfig(path=str(tmp_path / "spool.db"), min_free_bytes=0)
    daemon = open_spool(cfg, FakeClock())
    seqs = daemon.append([_reading(i) for i in range(200)]).seqs
    daemon.settle([], [Rejection(s, 0x87, "no") for s in seqs[:100]])  # 100 dead letters
    drainer = _Drainer(daemon)
    drainer.start()
    operator = open_spool(cfg, FakeClock(), create=False)
    try:
        assert operator.requeue(seqs[:60]) == 60
        assert operator.purge(None) == 40
    finally:
        drainer.stop.set()
        drainer.join(30)
        operator.close()
    assert not drainer.errors
    assert set(seqs[:60]) <= set(drainer.delivered)  # requeued rows went out again, same seq
    assert len(drainer.delivered) == len(set(drainer.delivered))
    stats = daemon.stats()
    assert (stats.dead_letters, stats.depth, stats.dropped) == (0, 0, {"purged": 40})
    assert read_meta(daemon, "count.reading") == "0"
    assert read_meta(daemon, "count.dead_letter") == "0"
    daemon.close()
