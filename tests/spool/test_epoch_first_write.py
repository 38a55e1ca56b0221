"""The first write after an unclean stop begins a new epoch, whichever writer makes it.

A ``run`` at ``synchronous = "normal"`` may publish seqs whose commits a power
cut then takes away; the next writer gets those seqs again from SQLite. Here
the cut is a restored mid-run copy of the database and its WAL (no FUSE
needed); tests/powercut/test_first_write.py does it with real power cuts.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from fakes.clock import FakeClock
from support.daemon import mqttspool_env, run_cli
from support.spooltools import high_water_seq, read_meta

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading, from_us
from mqttspool.spool import Spool, open_spool
from mqttspool.spool.ownership import SpoolLock


def _open(path: Path) -> Spool:
    cfg = SpoolConfig(path=str(path), min_free_bytes=0, synchronous="normal")
    return open_spool(cfg, FakeClock())


def _append(spool: Spool, values: range) -> list[int]:
    ts = from_us(1_700_000_000_000_000)
    batch = [Reading(device="d", sensor="s", metric="m", value=float(v), ts=ts) for v in values]
    return spool.append(batch).seqs


def _files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal")]


def _cut_mid_run(path: Path, tmp: Path) -> dict[int, str]:
    """A run appends 1-3, a copy is taken, it appends (and "publishes") 4-6, the power fails.

    Returns the ids (seq -> epoch) the run handed out after the copy: what a
    consumer has seen but the restored spool forgot.
    """
    run = _open(path)
    run.begin_writing()
    _append(run, range(1, 4))
    saved = tmp / "saved"
    saved.mkdir()
    for f in _files(path):
        shutil.copy2(f, saved / f.name)  # the disk as a cut would leave it
    published = {seq: run.epoch_of(seq) for seq in _append(run, range(4, 7))}
    run.close()  # no mark_clean: the run did not stop cleanly
    for f in _files(path):
        shutil.copy2(saved / f.name, f)
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    return published


def _ids(path: Path) -> dict[int, tuple[str, float]]:
    spool = _open(path)
    try:
        return {r.seq: (spool.epoch_of(r.seq), r.value) for r in spool.rows_after(0, 1000)}
    finally:
        spool.close()


def test_enqueue_after_a_restored_mid_run_copy_begins_a_new_epoch(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    published = _cut_mid_run(path, tmp_path)
    assert sorted(published) == [4, 5, 6]
    lines = "".join(json.dumps({"sensor": "e", "metric": "m", "value": v}) + "\n" for v in (7, 8))
    result = run_cli(
        ["enqueue", "-"], mqttspool_env(path, 1, spool__synchronous="normal"), stdin=lines
    )
    assert result.returncode == 0, result.stderr
    assert "new epoch" in result.stderr and "did not stop cleanly" in result.stderr
    ids = _ids(path)
    assert sorted(ids) == [1, 2, 3, 4, 5]  # SQLite handed out seqs 4 and 5 again...
    for seq in (4, 5):  # ...but under a new epoch: no id names two readings
        assert ids[seq][0] != published[seq]
    assert {ids[s][0] for s in (1, 2, 3)} == {published[4]}  # old rows keep their ids


def test_requeue_after_a_cut_fences_before_the_next_reading(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    published = _cut_mid_run(path, tmp_path)
    env = mqttspool_env(path, 1, spool__synchronous="normal")
    result = run_cli(["dead-letters", "requeue", "--all"], env)
    assert result.returncode == 0, result.stderr
    assert "new epoch" in result.stderr
    spool = _open(path)
    try:
        assert read_meta(spool, "shutdown") == "clean"  # fenced, and no publisher is alive
        (seq,) = _append(spool, range(9, 10))
        assert seq == 4 and spool.epoch_of(seq) != published[4]
    finally:
        spool.close()


def test_a_writer_beside_a_live_run_keeps_the_runs_epoch(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    _cut_mid_run(path, tmp_path)
    with SpoolLock(path):
        run = _open(path)
        try:
            change = run.begin_writing()  # the run's start fences the cut
            assert change is not None
            other = _open(path)  # e.g. ``enqueue`` while the run is up
            try:
                (seq,) = _append(other, range(10, 11))
                assert other.epoch == run.epoch == other.epoch_of(seq) == change.new
                assert read_meta(other, "shutdown") == "running:normal"  # the run's record
            finally:
                other.close()
        finally:
            run.close()


def test_a_writer_while_a_run_starts_but_has_not_fenced_yet_fences_itself(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    published = _cut_mid_run(path, tmp_path)
    with sqlite3.connect(path) as conn:  # the cut run was another process than this one
        conn.execute("UPDATE meta SET value = '1 another-boot' WHERE key = 'writer'")
    with SpoolLock(path):  # a run holds the lock but has not reached begin_writing
        other = _open(path)
        try:
            (seq,) = _append(other, range(11, 12))
            assert other.epoch_of(seq) != published[seq]
            # Not "clean": the starting run must still record and judge for itself.
            assert read_meta(other, "shutdown") == "running:normal"
        finally:
            other.close()
        run = _open(path)
        try:
            run.begin_writing()
            assert run.stats().epoch == run.epoch_of(high_water_seq(run) + 1)
        finally:
            run.close()


def test_after_a_clean_stop_no_writer_begins_an_epoch(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    run = _open(path)
    run.begin_writing()
    _append(run, range(3))
    first = run.epoch
    run.mark_clean()
    run.close()
    other = _open(path)
    try:
        _append(other, range(2))
        assert other.epoch == first
    finally:
        other.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM epoch_start").fetchone()[0] == 1
