"""Spool operations only tests need (not part of :class:`~mqttspool.spool.Spool`'s API).

Each is a thin wrapper over the public API or a read of the file: what a test
wants to set up or look at, not what mqttspool does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mqttspool.spool import Rejection, Spool
from mqttspool.spool.rows import meta_set


def ack(spool: Spool, seqs: Iterable[int]) -> None:
    """Delete acknowledged rows (one transaction), as the bridge's settle does."""
    spool.settle(seqs)


def dead_letter(spool: Spool, seq: int, code: int, reason: str) -> None:
    """Move one row to the dead-letter table with the broker's reason."""
    spool.settle((), [Rejection(seq, code, reason)])


def _query(spool: Spool, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    """Through the spool's own connection (a file deleted under it stays deleted)."""
    return list(spool.db.execute_sql(sql, params).fetchall())


def high_water_seq(spool: Spool) -> int:
    """The highest seq ever assigned (never reused, even after deletes)."""
    rows = _query(spool, "SELECT seq FROM sqlite_sequence WHERE name = 'reading'")
    return int(rows[0][0]) if rows else 0


def all_seqs(spool: Spool) -> list[int]:
    """Every queued seq, in order."""
    return [int(r[0]) for r in _query(spool, "SELECT seq FROM reading ORDER BY seq")]


def read_meta(spool: Spool, key: str) -> str | None:
    """One value of the meta table."""
    rows = _query(spool, "SELECT value FROM meta WHERE key = ?", (key,))
    return None if not rows else str(rows[0][0])


def write_meta(spool: Spool, key: str, value: str) -> None:
    """Set one value of the meta table (its own write transaction)."""
    with spool.durability.write() as cur:
        meta_set(cur, key, value)
