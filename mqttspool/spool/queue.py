"""The queue: append with bounds and overflow policy, read in order, settle, expire.

``append`` stores a round in one transaction; ``spool.max_rows`` and
``spool.min_free_bytes`` are applied inside it (``drop_oldest`` deletes the
oldest queued rows, ``drop_newest`` refuses the newest of the batch), and
every drop is counted by reason. The spool keeps no lease state: what is in
flight is the bridge's business; it reads through :meth:`Queue.rows_after`
and settles acknowledged and rejected rows with :meth:`Queue.settle`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from mqttspool.config import SpoolConfig
from mqttspool.errors import SpoolFullError
from mqttspool.reading import Reading, StoredReading
from mqttspool.spool.dberrors import DB_ERRORS, is_full
from mqttspool.spool.diskfull import DiskGuard
from mqttspool.spool.durability import Durability
from mqttspool.spool.identity import FileIdentity
from mqttspool.spool.rows import (
    COLUMNS,
    AppendResult,
    Eviction,
    Rejection,
    add_reading_count,
    counts,
    evict_oldest,
    insert,
    meta_set,
    stored,
    sync_dead_count,
)
from mqttspool.timekeeping import Clock

AGE_CHECK_S = 10.0
DELETE_CHUNK = 500


class AppendSignal:
    """Commits of new rows by this process: a counter and callbacks (the bridge's wake-up)."""

    def __init__(self) -> None:
        self.count = 0
        self._callbacks: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the committing thread) after every commit of new rows.

        It must be quick and must not raise: the bridge passes an event's ``set``.
        """
        self._callbacks.append(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        """Forget ``callback`` (no error if unknown)."""
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def fire(self) -> None:
        """Rows were committed: count it, call every callback."""
        self.count += 1
        for callback in list(self._callbacks):
            callback()


class Queue:
    """The ``reading`` table of one spool as a bounded FIFO."""

    def __init__(
        self,
        config: SpoolConfig,
        clock: Clock,
        durability: Durability,
        disk: DiskGuard,
        identity: FileIdentity,
    ) -> None:
        self.config = config
        self.clock = clock
        self.durable = durability
        self.disk = disk
        self.identity = identity
        self._age_checked_at = -1e18
        # Rows committed by this process: a counter the bridge compares (no query)
        # and callbacks that wake it; other processes show through data_version().
        self.appended = AppendSignal()

    # ------------------------------------------------------------------ append

    def append(
        self, readings: Sequence[Reading], clock_stamped: bool | Sequence[bool] = False
    ) -> AppendResult:
        """Store ``readings`` in one transaction (see :meth:`Spool.append`)."""
        if not readings:
            return AppendResult([])
        self.identity.maybe_check()
        self._maybe_expire()
        stamped = _flags(clock_stamped, len(readings))
        boot, mono = self.clock.boot_id(), self.clock.mono_ns()
        rows = [
            (r.device, r.sensor, r.metric, r.value, r.unit, r.ts_us, r.time_synced, boot, mono, s)
            for r, s in zip(readings, stamped, strict=True)
        ]
        if self.disk.full and not self.disk.space_is_back():
            # Do not spend the headroom that deletes and drop counters need.
            return self._append_on_full_disk(rows)
        try:
            return self._append_rows(rows)
        except DB_ERRORS as exc:
            if not is_full(exc, self.disk.path):
                raise
        return self._append_on_full_disk(rows)

    def _append_rows(self, rows: list[tuple[Any, ...]]) -> AppendResult:
        dropped: Counter[str] = Counter()
        evicted: list[Eviction] = []
        with self.durable.write() as cur:
            first, keep = self._make_room(cur, len(rows), dropped, evicted)
            # No count update: the new seqs above count.reading_hwm count them.
            seqs = insert(cur, rows[first : first + keep])
            self.durable.persist_drops(cur, dropped)
        if seqs:
            self.appended.fire()
        self.durable.drops.log(dropped)
        return AppendResult(seqs, dict(dropped), first, tuple(evicted))

    def _append_on_full_disk(self, rows: list[tuple[Any, ...]]) -> AppendResult:
        """Disk full: use the reserve, apply the overflow policy once, else count the batch."""
        self.disk.enter_full()
        if self.config.overflow == "drop_oldest":
            with contextlib.suppress(*DB_ERRORS):
                freed = self._drop_oldest_now(len(rows), "disk_full")
                if freed is not None:
                    with contextlib.suppress(*DB_ERRORS):
                        got = self._append_rows(rows)
                        dropped = Counter(got.dropped) + Counter(disk_full=freed.count)
                        return AppendResult(
                            got.seqs, dict(dropped), got.first_kept, (freed, *got.evicted)
                        )
        self.durable.drops.count_pending("disk_full", len(rows))
        self.durable.flush_pending()
        raise SpoolFullError(
            self.disk.path,
            f"disk full: {len(rows)} reading(s) not stored (counted as dropped, reason"
            " disk_full); free space on the spool's filesystem",
            dropped=len(rows),
        )

    def _make_room(
        self, cur: sqlite3.Cursor, n: int, dropped: Counter[str], evicted: list[Eviction]
    ) -> tuple[int, int]:
        """Apply the bounds inside the write transaction for ``n`` new rows.

        Returns which of them may be added: (index of the first, how many).
        ``drop_oldest`` deletes the oldest queued rows (and, if the batch alone is
        over ``max_rows``, refuses the oldest of the batch); ``drop_newest``
        refuses the newest rows of the batch instead.
        """
        cfg = self.config
        if self.disk.free_space(cfg.min_free_bytes) < cfg.min_free_bytes:
            if cfg.overflow == "drop_newest":
                dropped["min_free_bytes"] += n
                return 0, 0
            _note(evicted, dropped, evict_oldest(cur, n, "min_free_bytes"))
        excess = self._depth_for_bound(cur, n) + n - cfg.max_rows
        if excess <= 0:
            return 0, n
        if cfg.overflow == "drop_newest":
            keep = max(0, n - excess)
            dropped["max_rows"] += n - keep
            return 0, keep
        _note(evicted, dropped, evict_oldest(cur, excess, "max_rows"))
        keep = min(n, cfg.max_rows)
        dropped["max_rows"] += n - keep
        return n - keep, keep

    def _depth_for_bound(self, cur: sqlite3.Cursor, n: int) -> int:
        # Two subqueries: SQLite's min/max optimisation (one B-tree probe) only
        # applies to a lone MIN() or MAX(); "SELECT MIN(seq), MAX(seq)" scans the table.
        lo, hi = cur.execute(
            "SELECT (SELECT MIN(seq) FROM reading), (SELECT MAX(seq) FROM reading)"
        ).fetchone()
        if lo is None:
            return 0
        upper = int(hi) - int(lo) + 1
        if upper + n <= self.config.max_rows:
            return upper  # cheap upper bound is already within the limit
        return counts(cur.execute)[0]  # exact: we hold the write lock

    def _drop_oldest_now(self, n: int, reason: str) -> Eviction | None:
        dropped: Counter[str] = Counter()
        with self.durable.write() as cur:
            freed = evict_oldest(cur, n, reason)
            if freed is not None:
                dropped[reason] = freed.count
            self.durable.persist_drops(cur, dropped)
        self.durable.drops.log(dropped)
        return freed

    # ------------------------------------------------------------------ expiry

    def _maybe_expire(self) -> None:
        if self.config.max_age <= 0:
            return
        now = time.monotonic()
        if now - self._age_checked_at >= AGE_CHECK_S:
            self._age_checked_at = now
            # A full disk may refuse even the delete; the append that follows
            # applies the overflow policy and reports it.
            try:
                self.expire()
            except DB_ERRORS as exc:
                if not is_full(exc, self.disk.path):
                    raise

    def expire(self) -> int:
        """Drop rows older than ``spool.max_age`` (reason ``max_age``); returns the count."""
        if self.config.max_age <= 0:
            return 0
        max_age = self.config.max_age
        cutoff_us = self.clock.wall_us() - int(max_age * 1_000_000)
        cutoff_mono = self.clock.mono_ns() - int(max_age * 1_000_000_000)
        dropped: Counter[str] = Counter()
        with self.durable.write() as cur:
            cur.execute(
                "DELETE FROM reading WHERE (time_synced = 1 AND ts_us < ?)"
                " OR (boot_id = ? AND mono_ns < ?)",
                (cutoff_us, self.clock.boot_id(), cutoff_mono),
            )
            dropped["max_age"] = cur.rowcount
            add_reading_count(cur, -cur.rowcount)
            self.durable.persist_drops(cur, dropped)
        self.durable.drops.log(dropped)
        return dropped["max_age"]

    # ------------------------------------------------------------------- read

    def rows_after(self, seq: int, limit: int, through: int | None = None) -> list[StoredReading]:
        """Up to ``limit`` queued rows after ``seq`` (and up to ``through``), oldest first."""
        if limit <= 0:
            return []
        if through is None:
            return self._select("seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return self._select("seq > ? AND seq <= ? ORDER BY seq LIMIT ?", (seq, through, limit))

    def newest_seq(self) -> int:
        """The highest seq queued now (0 when empty)."""
        row = self.durable.db.execute_sql("SELECT MAX(seq) FROM reading").fetchone()
        return int(row[0] or 0)

    def _select(self, where: str, params: tuple[Any, ...]) -> list[StoredReading]:
        sql = f"SELECT {COLUMNS} FROM reading WHERE {where}"
        return [stored(r) for r in self.durable.db.execute_sql(sql, params).fetchall()]

    # ------------------------------------------------------------------ settle

    def settle(self, acked: list[int], rejected: list[Rejection], durable: bool) -> None:
        """Delete acknowledged rows, dead-letter rejected ones (see :meth:`Spool.settle`)."""
        self.identity.maybe_check()
        now = self.clock.wall_us()
        with self.durable.synchronous("FULL" if durable else "NORMAL"):
            deleted = self.disk.retry(lambda: self._settle_once(acked, rejected, now))
        if not durable:
            self.durable.count_unsynced(deleted)

    def _settle_once(self, acked: list[int], rejected: list[Rejection], now: int) -> int:
        with self.durable.write() as cur:
            deleted = 0
            for i in range(0, len(acked), DELETE_CHUNK):
                chunk = acked[i : i + DELETE_CHUNK]
                cur.execute(
                    f"DELETE FROM reading WHERE seq IN ({','.join('?' * len(chunk))})", chunk
                )
                deleted += cur.rowcount
            for rej in rejected:
                cur.execute(
                    f"INSERT OR REPLACE INTO dead_letter ({COLUMNS}, code, reason,"
                    f" failed_at_us) SELECT {COLUMNS}, ?, ?, ? FROM reading WHERE seq = ?",
                    (rej.code, rej.reason, now, rej.seq),
                )
                cur.execute("DELETE FROM reading WHERE seq = ?", (rej.seq,))
                deleted += cur.rowcount
            add_reading_count(cur, -deleted)
            if rejected:
                sync_dead_count(cur)
            if acked:
                meta_set(cur, "last_publish_us", str(now))
            self.durable.persist_drops(cur, Counter())
        return deleted

    # ------------------------------------------------------------- re-timing

    def correct_clock(self, boot_id: str, wall_us: int, mono_ns: int) -> int:
        """Re-time rows this boot stamped with its unsynchronized clock (see the facade)."""
        with self.durable.write() as cur:
            cur.execute(
                "UPDATE reading SET ts_us = ? - (? - mono_ns) / 1000, time_synced = 1"
                " WHERE boot_id = ? AND time_synced = 0 AND clock_stamped = 1",
                (wall_us, mono_ns, boot_id),
            )
            return int(cur.rowcount)


def _note(evicted: list[Eviction], dropped: Counter[str], freed: Eviction | None) -> None:
    if freed is not None:
        evicted.append(freed)
        dropped[freed.reason] += freed.count


def _flags(clock_stamped: bool | Sequence[bool], n: int) -> list[bool]:
    if isinstance(clock_stamped, bool):
        return [clock_stamped] * n
    if len(clock_stamped) != n:
        raise ValueError(f"clock_stamped has {len(clock_stamped)} flags for {n} readings")
    return [bool(s) for s in clock_stamped]
