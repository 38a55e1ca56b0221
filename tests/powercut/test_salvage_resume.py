"""A salvage cut short is resumed from its intent file (no FUSE needed here).

The power-cut proofs are ``test_a_cut_at_any_step_of_a_salvage_is_resumed_exactly``
and ``test_a_cut_during_salvage_loses_no_salvageable_reading`` in
tests/powercut/test_commands.py; these replay the states a cut leaves behind.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

from fakes.clock import FakeClock
from support.spooltools import all_seqs, read_meta

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading, from_us
from mqttspool.spool import Spool, open_spool
from mqttspool.spool.opening import _salvage
from mqttspool.spool.salvage import (
    aside_name,
    quarantine,
    record_intent,
    salvage_lock,
    tmp_path_for,
)


def _spool_with_rows(path: Path, n: int) -> tuple[SpoolConfig, str]:
    cfg = SpoolConfig(path=str(path), min_free_bytes=0)
    spool = open_spool(cfg, FakeClock())
    ts = from_us(1_700_000_000_000_000)
    spool.append(
        [Reading(device="d", sensor="s", metric="m", value=float(i), ts=ts) for i in range(n)]
    )
    epoch = spool.epoch
    spool.close()
    return cfg, epoch


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_salvage_cut_after_the_quarantine_is_redone_from_the_quarantined_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    cfg, epoch = _spool_with_rows(path, 30)
    aside = aside_name(path)
    record_intent(path, aside)  # what the cut left: intent, quarantine, a partial tmp
    quarantine(path, aside)
    tmp_path_for(path).write_bytes(b"half a spool")
    digest = _digest(aside)
    spool = open_spool(cfg, FakeClock())  # any writer start resumes
    try:
        assert spool.epoch == epoch
        assert all_seqs(spool) == list(range(1, 31))
        assert spool.stats().dropped == {}  # nothing unreadable, nothing counted twice
        assert read_meta(spool, "salvaged_from") == str(aside)
    finally:
        spool.close()
    assert _digest(aside) == digest  # the quarantined file is kept as it was
    assert sorted(p.name for p in tmp_path.iterdir() if ".salvage" in p.name) == [
        "spool.db.salvage-lock"
    ]  # no intent, no tmp


def test_a_salvage_cut_after_it_landed_only_clears_its_intent(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    cfg, _ = _spool_with_rows(path, 5)
    aside = aside_name(path)
    record_intent(path, aside)
    quarantine(path, aside)
    spool = open_spool(cfg, FakeClock())  # salvages, installs, clears the intent
    spool.close()
    record_intent(path, aside)  # as if the intent's removal had not reached the disk
    before = os.stat(path).st_ino
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM reading WHERE seq = 1")  # delivered since: must stay gone
    spool = open_spool(cfg, FakeClock())
    try:
        assert all_seqs(spool) == [2, 3, 4, 5]  # not salvaged a second time
    finally:
        spool.close()
    assert os.stat(path).st_ino == before
    assert not path.with_name("spool.db.salvage").exists()
    assert sorted(p.name for p in tmp_path.glob("spool.db.corrupt-*")) == [
        aside.name,
        *(f"{aside.name}{s}" for s in ("-shm", "-wal") if Path(f"{aside}{s}").exists()),
    ]


def test_a_writer_waits_for_a_salvage_in_progress_and_does_not_redo_it(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    cfg, _ = _spool_with_rows(path, 7)
    aside = aside_name(path)
    record_intent(path, aside)
    quarantine(path, aside)
    opened: list[Spool] = []
    with salvage_lock(path):  # another process is salvaging
        writer = threading.Thread(target=lambda: opened.append(open_spool(cfg, FakeClock())))
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and not path.exists()  # it waits instead of salvaging too
        _salvage(path, aside)  # the other process finishes
    writer.join(30)
    (spool,) = opened
    try:
        assert all_seqs(spool) == list(range(1, 8))
        assert read_meta(spool, "salvaged_from") == str(aside)  # the first salvage, kept
    finally:
        spool.close()
