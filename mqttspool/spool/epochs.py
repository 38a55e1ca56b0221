"""Epochs: a message id (``device:epoch:seq``) is never used for two readings.

At ``spool.synchronous = "normal"`` a power cut may take the last commits with
it -- and with them seqs the bridge had already published. After the reboot
SQLite hands those seqs out again. So a ``run`` or ``drain`` records in
``meta`` (key :data:`SHUTDOWN_KEY`) that it is running and at which level
(``running:normal``), and a clean stop replaces that with ``clean``. A writer
start that finds ``running:normal`` (or no record at all while configured for
``normal``) begins a new random epoch before any new reading gets a seq: a
reused seq then carries a new id, and a consumer deduping on ``id`` never
drops a new reading. ``running:full`` keeps the epoch: at FULL no commit is
lost.

The queue keeps the old epoch's rows under their old ids: the
``epoch_start`` table maps seq ranges to epochs (``seq`` = the first seq of
that epoch; a row belongs to the epoch with the greatest start <= its seq).
The mapping is exact because a new epoch starts above the high-water mark,
read in the same transaction that records it, and that transaction is
committed at FULL (fsync'd) before the first append of the new epoch.
"""

from __future__ import annotations

import bisect
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mqttspool.spool.dberrors import DB_ERRORS

SHUTDOWN_KEY = "shutdown"
CLEAN = "clean"
RUNNING = "running:"


@dataclass(frozen=True)
class EpochChange:
    """A new epoch began at a writer start: the old and new token, why, and its first seq."""

    old: str
    new: str
    reason: str
    first_seq: int


def new_epoch_reason(marker: str | None, synchronous: str) -> str | None:
    """Why a writer start must begin a new epoch, or None when no commit can have been lost.

    ``marker`` is the recorded shutdown state (``clean``, ``running:<level>``,
    or None when there is no record: a spool written by a release before this
    record existed, or salvaged from a file whose meta table was unreadable);
    ``synchronous`` is the level configured now, the best guess without a record.
    """
    if marker == CLEAN:
        return None
    if marker is not None and marker.startswith(RUNNING):
        level = marker.removeprefix(RUNNING)
        if level == "full":
            return None  # FULL fsyncs every commit: nothing published can be lost
        return (
            f"the previous run or drain (spool.synchronous = {level}) did not stop cleanly,"
            " so a power cut may have lost commits whose seqs were already published"
        )
    if synchronous == "full":
        return None
    return (
        "no record of a clean shutdown and spool.synchronous = normal,"
        " so commits whose seqs were already published may have been lost"
    )


def running_marker(synchronous: str) -> str:
    """What a writer records at its start: ``running:<level>``."""
    return f"{RUNNING}{synchronous}"


def begin_epoch(cur: sqlite3.Cursor) -> tuple[str, int]:
    """Record a new random epoch from the next seq on (inside the caller's transaction).

    Returns the new token and its first seq. A start at the same seq replaces
    the previous one: that epoch holds no row (its rows were lost with the cut).
    """
    row = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'reading'").fetchone()
    first = (int(row[0]) if row else 0) + 1
    token = secrets.token_hex(4)
    cur.execute("DELETE FROM epoch_start WHERE seq >= ?", (first,))
    cur.execute("INSERT INTO epoch_start (seq, epoch) VALUES (?, ?)", (first, token))
    cur.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (token,))
    return token, first


class EpochMap:
    """seq -> epoch, from the ``epoch_start`` rows (the current epoch on the fast path)."""

    def __init__(self, starts: list[tuple[int, str]], current: str) -> None:
        ordered = sorted(starts) or [(1, current)]
        self._seqs = [seq for seq, _ in ordered]
        self._epochs = [epoch for _, epoch in ordered]
        self._last = self._seqs[-1]

    def of(self, seq: int) -> str:
        """The epoch of the row with ``seq``."""
        if seq >= self._last:
            return self._epochs[-1]
        return self._epochs[max(0, bisect.bisect_right(self._seqs, seq) - 1)]

    def starts(self) -> list[tuple[int, str]]:
        """(first seq, epoch) pairs, oldest first."""
        return list(zip(self._seqs, self._epochs, strict=True))


def read_starts(execute: Callable[[str], Any]) -> list[tuple[int, str]]:
    """Every ``epoch_start`` row; [] when the table is missing (schema < 3, read-only open)."""
    try:
        rows = execute("SELECT seq, epoch FROM epoch_start ORDER BY seq").fetchall()
    except DB_ERRORS as exc:
        if "no such table" in str(exc):
            return []
        raise
    return [(int(seq), str(epoch)) for seq, epoch in rows]
