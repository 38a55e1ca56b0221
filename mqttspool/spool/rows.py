"""The queue's rows: the records the spool hands out and the SQL that moves rows.

What :class:`~mqttspool.spool.store.Spool` returns (:class:`AppendResult`,
:class:`Eviction`, :class:`DeadLetter`) or takes (:class:`Rejection`), and the
statements every part shares: multi-row INSERT, deleting the oldest rows, the
row counters of schema 4 (``count.reading`` + the high-water mark,
``count.dead_letter``), meta writes. Functions here run inside the caller's
write transaction (a cursor) and never commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mqttspool.reading import StoredReading
from mqttspool.spool import schema

COLUMNS = schema.COLUMNS
INSERT_CHUNK = 500  # rows per INSERT statement (10 parameters each)


@dataclass(frozen=True)
class Rejection:
    """A broker refusal of one message (PUBACK reason code >= 0x80)."""

    seq: int
    code: int
    reason: str


@dataclass(frozen=True)
class Eviction:
    """Queued readings deleted to make room: every queued seq in ``first..last``."""

    reason: str
    count: int
    first: int
    last: int


@dataclass(frozen=True)
class AppendResult:
    """What :meth:`Spool.append` stored and what it had to drop to make room.

    ``seqs`` are the stored readings, which are ``readings[first_kept :
    first_kept + len(seqs)]`` of the call (the others were refused, counted in
    ``dropped``); ``evicted`` are the queued readings deleted for them.
    """

    seqs: list[int]
    dropped: dict[str, int] = field(default_factory=dict)
    first_kept: int = 0
    evicted: tuple[Eviction, ...] = ()


@dataclass(frozen=True)
class DeadLetter:
    """One row of the dead-letter table."""

    reading: StoredReading
    code: int
    reason: str
    failed_at_us: int


def insert(cur: sqlite3.Cursor, rows: list[tuple[Any, ...]]) -> list[int]:
    """Multi-row INSERTs; returns the new seqs.

    One statement per chunk, and lastrowid (which executemany leaves unset)
    gives the seqs without another query. One writer holds the lock, so the
    seqs of one call are consecutive.
    """
    if not rows:
        return []
    hi = 0
    for i in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[i : i + INSERT_CHUNK]
        cur.execute(
            "INSERT INTO reading (device, sensor, metric, value, unit, ts_us,"
            " time_synced, boot_id, mono_ns, clock_stamped) VALUES "
            + ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * len(chunk)),
            [v for row in chunk for v in row],
        )
        hi = int(cur.lastrowid or 0)
    return list(range(hi - len(rows) + 1, hi + 1))


def evict_oldest(cur: sqlite3.Cursor, n: int, reason: str) -> Eviction | None:
    """Delete the ``n`` oldest queued rows; what was deleted, or None if nothing was queued."""
    lo, hi = cur.execute(
        "SELECT MIN(seq), MAX(seq) FROM (SELECT seq FROM reading ORDER BY seq LIMIT ?)", (n,)
    ).fetchone()
    if lo is None:
        return None
    cur.execute("DELETE FROM reading WHERE seq <= ?", (hi,))
    deleted = int(cur.rowcount)
    add_reading_count(cur, -deleted)
    return Eviction(reason, deleted, int(lo), int(hi))


# ------------------------------------------------------------- row counters


def add_reading_count(cur: sqlite3.Cursor, delta: int) -> None:
    """Count ``delta`` rows more (or fewer) in ``reading``; nothing is written for 0."""
    if delta:
        fold_reading_count(cur, delta)


def fold_reading_count(cur: sqlite3.Cursor, delta: int = 0) -> None:
    """Fold the rows appended since the mark into ``count.reading``, add ``delta`` and
    move the mark to the high-water seq (inside the caller's write transaction).

    Appends do not update the counter (:func:`schema.queued_rows`); every other
    change of the table calls this.
    """
    cur.execute(
        "UPDATE meta SET value = CAST(value AS INTEGER) + ? + (" + schema.HWM_SQL + ")"
        " - (SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?) WHERE key = ?",
        (delta, schema.COUNT_READING_HWM, schema.COUNT_READING),
    )
    _set_reading_hwm(cur)


def count_inserted_with_seq(cur: sqlite3.Cursor, n: int) -> None:
    """After ``n`` rows went in with their own (old) seqs, following
    :func:`fold_reading_count`: count exactly them, even if one seq raised the
    high-water mark."""
    cur.execute(
        "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = ?",
        (n, schema.COUNT_READING),
    )
    _set_reading_hwm(cur)


def _set_reading_hwm(cur: sqlite3.Cursor) -> None:
    cur.execute(
        "UPDATE meta SET value = (" + schema.HWM_SQL + ") WHERE key = ?",
        (schema.COUNT_READING_HWM,),
    )


def sync_dead_count(cur: sqlite3.Cursor) -> None:
    """Recount ``dead_letter`` (small) rather than track INSERT OR REPLACE."""
    cur.execute(
        "UPDATE meta SET value = (SELECT COUNT(*) FROM dead_letter) WHERE key = ?",
        (schema.COUNT_DEAD,),
    )


_COUNTS_SQL = (
    "SELECT (SELECT value FROM meta WHERE key = ?), (SELECT value FROM meta WHERE key = ?),"
    " (" + schema.HWM_SQL + "), (SELECT value FROM meta WHERE key = ?)"
)


def counts(execute: Callable[..., Any]) -> tuple[int, int]:
    """(queued readings, dead letters) from the row counters, in one statement (one snapshot).

    A file without the counters (opened read-only before its migration) is counted.
    """
    count, mark, hwm, dead = execute(
        _COUNTS_SQL, (schema.COUNT_READING, schema.COUNT_READING_HWM, schema.COUNT_DEAD)
    ).fetchone()
    if count is None:
        queued = int(execute("SELECT COUNT(*) FROM reading").fetchone()[0])
    else:
        queued = schema.queued_rows(int(count), None if mark is None else int(mark), int(hwm))
    if dead is None:
        dead = execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
    return queued, int(dead)


# -------------------------------------------------------------------- misc


def stored(r: Sequence[Any]) -> StoredReading:
    """A ``reading``/``dead_letter`` row (:data:`COLUMNS` first) as a :class:`StoredReading`."""
    return StoredReading(
        seq=int(r[0]),
        device=r[1],
        sensor=r[2],
        metric=r[3],
        value=float(r[4]),
        unit=r[5],
        ts_us=int(r[6]),
        time_synced=bool(r[7]),
    )


def meta_set(cur: sqlite3.Cursor, key: str, value: str) -> None:
    """Set one ``meta`` value inside the caller's transaction."""
    cur.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def seq_filter(seqs: Sequence[int] | None) -> tuple[str, tuple[int, ...]]:
    """A WHERE clause for ``seqs`` (None: every row; empty: none)."""
    if seqs is None:
        return "", ()
    if not seqs:
        return "WHERE 0", ()
    return f"WHERE seq IN ({','.join('?' * len(seqs))})", tuple(seqs)
