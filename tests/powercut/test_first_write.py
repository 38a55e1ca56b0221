"""A power cut at ``synchronous = "normal"``, then each writer makes the first write.

A ``run`` publishes readings whose commits are not yet fsync'd; the power
fails (tests/support/powercut), the spool comes back without them, and SQLite would
hand their seqs out again. Whichever writer comes first -- ``enqueue``,
``run``, ``drain``, ``dead-letters requeue``, or a salvage of the damaged
file -- a new epoch must begin before a new reading gets a seq. Checked end
to end: every id the broker ever carried names one reading, nothing
committed or accepted is lost (a salvage's unreadable rows are counted).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from support.broker import MosquittoBroker
from support.daemon import mqttspool_env, run_cli
from support.powercut import PowerCutMount
from support.powercut.fixture import powercut
from support.recorder import Recorder, RecorderFactory

from mqttspool.config import SpoolConfig
from mqttspool.spool import Rejection, open_spool, recover_spool
from powercut.test_commands import (
    SIMULATED,
    assert_ids_never_reused,
    backlog,
    delivered,
    drain_to_empty,
    high_water,
    leaf_pages,
    run_until_delivered,
    status,
    wait_quiet,
)

__all__ = ["powercut"]

pytestmark = pytest.mark.integration

BACKLOG = 300
DEAD = 5
AFTER = range(1000, 1020)  # values the writer after the cut enqueues


def seed_dead_letters(path: Path, seqs: list[int]) -> None:
    """Move ``seqs`` to the dead-letter table, durably."""
    spool = open_spool(SpoolConfig(path=str(path), min_free_bytes=0))
    try:
        spool.settle((), [Rejection(s, 0x87, "not authorized") for s in seqs], durable=True)
    finally:
        spool.close()


def enqueue(env: dict[str, str]) -> None:
    lines = "".join(
        json.dumps({"sensor": "after", "metric": "n", "value": float(v)}) + "\n" for v in AFTER
    )
    result = run_cli(["enqueue", "-"], env, stdin=lines)
    assert result.returncode == 0, result.stderr


def corrupt_and_salvage(path: Path) -> None:
    """Scramble one inner leaf of the queue, then salvage it (the salvage is the writer)."""
    conn = sqlite3.connect(path)
    try:  # the WAL's durable frames into the file, so the page is the one read
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    page = leaf_pages(path)[1]
    with path.open("r+b") as fh:
        fh.seek((page - 1) * page_size)
        fh.write(b"\xa5" * page_size)
        fh.flush()
        os.fsync(fh.fileno())
    cfg = SpoolConfig(path=str(path), min_free_bytes=0, synchronous="normal")
    recover_spool(cfg).close()


def first_writer(writer: str, env: dict[str, str], recorder: Recorder, path: Path) -> None:
    """``writer`` makes the first write after the cut; then readings are enqueued."""
    if writer == "run":
        daemon = run_until_delivered(env, recorder, 20)
        daemon.terminate()
        assert daemon.wait(20) == 0
    elif writer == "drain":
        drain_to_empty(env, "drain after the cut")
    elif writer == "requeue":
        result = run_cli(["dead-letters", "requeue", "--all"], env)
        assert result.returncode == 0, result.stderr
    elif writer == "salvage":
        corrupt_and_salvage(path)
    enqueue(env)


@pytest.mark.parametrize("writer", ["enqueue", "run", "drain", "requeue", "salvage"])
@pytest.mark.timeout(150)
def test_the_first_write_after_a_cut_at_normal_never_reuses_an_id(
    powercut: PowerCutMount,
    broker: MosquittoBroker,
    recorder_factory: RecorderFactory,
    writer: str,
) -> None:
    recorder = recorder_factory(broker)
    path = powercut.path / "spool.db"
    seqs = backlog(path, BACKLOG)  # durable (FULL)
    seed_dead_letters(path, seqs[:DEAD])
    env = mqttspool_env(
        path, broker.port, spool__synchronous="normal", spool__min_free_bytes=0, sensors=SIMULATED
    )
    daemon = run_until_delivered(env, recorder, 60)  # published; at NORMAL not yet durable
    try:
        powercut.cut(daemon.proc)
    finally:
        daemon.stop()
    powercut.mount()
    wait_quiet(recorder)
    forgotten = {s for s in delivered(recorder) if s > high_water(path)}
    assert forgotten, "the cut should have taken published seqs with it"  # else no proof
    first_writer(writer, env, recorder, path)
    quiet = mqttspool_env(path, broker.port, spool__synchronous="normal", spool__min_free_bytes=0)
    drain_to_empty(quiet, f"{writer}: final drain")
    wait_quiet(recorder)
    assert_ids_never_reused(recorder, f"first writer {writer}")
    values = {d["value"] for d in recorder.data() if d["sensor"] == "after"}
    assert values == set(map(float, AFTER))  # every accepted reading delivered
    report = status(quiet, writer)
    dead = set(range(1, DEAD + 1)) if writer != "requeue" else set()  # still dead letters
    assert report["dead_letters"] == len(dead)
    missing = set(range(1, high_water(path) + 1)) - set(delivered(recorder)) - dead
    unreadable = report["dropped"].get("corrupt", 0)
    # Unreadable rows are counted (some were delivered before the cut already).
    assert len(missing) <= unreadable, (sorted(missing), report["dropped"])
    assert unreadable == 0 or writer == "salvage"
