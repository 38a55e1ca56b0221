"""Dead letters: readings the broker refused (PUBACK >= 0x80), kept with the reason.

:meth:`Queue.settle <mqttspool.spool.queue.Queue.settle>` moves a rejected row
here in the same transaction that deletes it from the queue. From here a user
lists them (``mqttspool dead-letters list``), puts them back in the queue with
their original seq and so their original id (``requeue``), or deletes them for
good, counted as dropped with reason ``purged`` (``purge``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from mqttspool.spool.diskfull import DiskGuard
from mqttspool.spool.durability import Durability
from mqttspool.spool.queue import AppendSignal
from mqttspool.spool.rows import (
    COLUMNS,
    DeadLetter,
    count_inserted_with_seq,
    fold_reading_count,
    seq_filter,
    stored,
    sync_dead_count,
)


class DeadLetters:
    """The ``dead_letter`` table of one spool."""

    def __init__(self, durability: Durability, disk: DiskGuard, appended: AppendSignal) -> None:
        self.durable = durability
        self.disk = disk
        self.appended = appended

    def list(self, limit: int | None = None) -> list[DeadLetter]:
        """Rejected rows, oldest seq first."""
        sql = f"SELECT {COLUMNS}, code, reason, failed_at_us FROM dead_letter ORDER BY seq"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        rows = self.durable.db.execute_sql(sql, params).fetchall()
        return [DeadLetter(stored(r[:8]), int(r[8]), str(r[9]), int(r[10])) for r in rows]

    def requeue(self, seqs: Sequence[int] | None) -> int:
        """Move dead letters back into the queue with their original seq (None: all)."""
        where, params = seq_filter(seqs)
        with self.durable.write() as cur:
            fold_reading_count(cur)  # bring the count up to date before seqs go in
            cur.execute(
                f"INSERT OR IGNORE INTO reading ({COLUMNS}, boot_id, mono_ns)"
                f" SELECT {COLUMNS}, '', 0 FROM dead_letter {where}",
                params,
            )
            moved = int(cur.rowcount)
            count_inserted_with_seq(cur, moved)
            cur.execute(f"DELETE FROM dead_letter {where}", params)
            sync_dead_count(cur)
        if moved:
            self.appended.fire()
        return moved

    def purge(self, seqs: Sequence[int] | None) -> int:
        """Delete dead letters for good, counted as dropped with reason ``purged``."""
        where, params = seq_filter(seqs)
        dropped: Counter[str] = Counter()

        def once() -> None:
            with self.durable.write() as cur:
                cur.execute(f"DELETE FROM dead_letter {where}", params)
                dropped["purged"] = cur.rowcount
                sync_dead_count(cur)
                self.durable.persist_drops(cur, dropped)

        self.disk.retry(once)
        return dropped["purged"]
