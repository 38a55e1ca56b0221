"""Epochs: a message id (``device:epoch:seq``) is never used for two readings.

At ``spool.synchronous = "normal"`` a power cut may take the last commits with
it -- and with them seqs the bridge had already published. After the reboot
SQLite hands those seqs out again. So a ``run`` or ``drain`` records in
``meta`` (key :data:`SHUTDOWN_KEY`) that it is running and at which level
(``running:normal``) and who it is (key :data:`WRITER_KEY`), and a clean
stop replaces the record with ``clean``.

The FIRST WRITE of every writer -- ``run``, ``drain``, ``enqueue``,
``dead-letters requeue``, the first append after a salvage -- passes
:func:`fence` (the spool calls it before its first write transaction, see
:meth:`Spool._write <mqttspool.spool.store.Spool._write>`). A record of
``running:normal`` (or none at all while configured for ``normal``) that does
not belong to the live ``run``/``drain`` holding ``<spool>.lock`` means an
unclean stop: a new random epoch begins before any new reading gets a seq, so
a reused seq carries a new id and a consumer deduping on ``id`` never drops a
new reading. ``running:full`` keeps the epoch: at FULL no commit is lost. A
short-lived writer that fenced while no ``run``/``drain`` is alive records
``clean``: it publishes nothing, so none of its own commits can be lost after
being published.

The queue keeps the old epoch's rows under their old ids: the
``epoch_start`` table maps seq ranges to epochs (``seq`` = the first seq of
that epoch; a row belongs to the epoch with the greatest start <= its seq).
The mapping is exact because a new epoch starts above the high-water mark,
read in the same transaction that records it, and that transaction is
committed at FULL (fsync'd) before the first write of the new epoch.
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
WRITER_KEY = "writer"  # the identity of the run/drain that recorded ``running:``
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


def fence(cur: sqlite3.Cursor, synchronous: str, owner: str | None, live: str | None) -> Fenced:
    """Decide, inside the caller's FULL write transaction, whether a new epoch begins now.

    ``owner``: this process's identity when it is the ``run``/``drain`` taking
    the spool (it records ``running:<level>`` and itself), None for a
    short-lived writer. ``live``: the identity of the ``run``/``drain`` holding
    the spool's lock now, if any. A short-lived writer leaves a live
    publisher's record alone; it fences what no live publisher fenced.
    """
    marker = _meta(cur, SHUTDOWN_KEY)
    reason = new_epoch_reason(marker, synchronous)
    if owner is None and live is not None and _meta(cur, WRITER_KEY) == live:
        reason = None  # the live run/drain began its epoch at its start
    change = None
    if reason is not None:
        old = _meta(cur, "epoch") or ""
        token, first = begin_epoch(cur)
        change = EpochChange(old, token, reason, first)
    if owner is not None:
        _meta_put(cur, SHUTDOWN_KEY, running_marker(synchronous))
        _meta_put(cur, WRITER_KEY, owner)
    elif change is not None and live is None:
        _meta_put(cur, SHUTDOWN_KEY, CLEAN)  # fenced, and nobody publishes
    return Fenced(_meta(cur, "epoch") or "", change)


@dataclass(frozen=True)
class Fenced:
    """The outcome of :func:`fence`: the current epoch and the change, if one began."""

    epoch: str
    change: EpochChange | None


def _meta(cur: sqlite3.Cursor, key: str) -> str | None:
    row = cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _meta_put(cur: sqlite3.Cursor, key: str, value: str) -> None:
    cur.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


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
