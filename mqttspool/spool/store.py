"""The durable queue: append with bounds, settle, dead letters, stats, meta.

Threads: one :class:`Spool` may be shared by a writer thread (sampler) and the
bridge thread; peewee gives each thread its own SQLite connection and SQLite's
WAL lets readers and one writer proceed together. Other processes
(``mqttspool enqueue``, ``dead-letters requeue``) may write the same file at
the same time. The spool keeps no lease state: what is in flight is the
bridge's business; it reads through :meth:`Spool.rows_after`.

Every public method maps database errors through
:func:`~mqttspool.spool.dberrors.mapped`, so callers only ever see
:class:`~mqttspool.errors.SpoolError` and its subclasses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mqttspool.config import SpoolConfig
from mqttspool.errors import SpoolFullError, SpoolGoneError
from mqttspool.reading import Reading, StoredReading, format_ts
from mqttspool.spool import schema
from mqttspool.spool.dberrors import DB_ERRORS, free_bytes, is_corrupt, is_full, mapped
from mqttspool.spool.drops import DropCounters
from mqttspool.spool.epochs import (
    CLEAN,
    SHUTDOWN_KEY,
    EpochChange,
    EpochMap,
    begin_epoch,
    new_epoch_reason,
    read_starts,
    running_marker,
)
from mqttspool.spool.headroom import Reserve, wal_pages
from mqttspool.timekeeping import Clock
from mqttspool.wire.snapshot import Snapshot

logger = logging.getLogger(__name__)

FREE_SPACE_CHECK_S = 1.0
AGE_CHECK_S = 10.0
FILE_CHECK_S = 30.0  # how often the spool checks that its file is still the one on disk
INSERT_CHUNK = 500  # rows per INSERT statement (10 parameters each)
DELETE_CHUNK = 500
_COLUMNS = schema.COLUMNS
_T = TypeVar("_T")


@dataclass(frozen=True)
class Rejection:
    """A broker refusal of one message (PUBACK reason code >= 0x80)."""

    seq: int
    code: int
    reason: str


@dataclass(frozen=True)
class AppendResult:
    """What :meth:`Spool.append` stored (``seqs``) and what it had to drop."""

    seqs: list[int]
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SpoolStats:
    """A snapshot for ``status``, the retained spool topic and metrics."""

    path: str
    epoch: str
    depth: int
    oldest_ts_us: int | None
    dead_letters: int
    dropped: dict[str, int]
    last_publish_us: int | None

    def oldest_age_seconds(self, now_us: int) -> float | None:
        """Age of the oldest queued reading, or None when empty."""
        if self.oldest_ts_us is None:
            return None
        return max(0.0, (now_us - self.oldest_ts_us) / 1e6)


@dataclass(frozen=True)
class DeadLetter:
    """One row of the dead-letter table."""

    reading: StoredReading
    code: int
    reason: str
    failed_at_us: int


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


class Spool:
    """A durable FIFO of readings in one SQLite file. Use :func:`~mqttspool.spool.open_spool`."""

    def __init__(
        self, path: Path, config: SpoolConfig, clock: Clock, epoch: str, disk_full: bool = False
    ) -> None:
        """``disk_full``: the opener had to use the reserve to open; keep the rest for deletes."""
        self.path = path
        self.config = config
        self.clock = clock
        self.epoch = epoch
        self.reserve = Reserve(path)
        # The WAL's not-yet-checkpointed pages must fit in the reserve for a
        # checkpoint on a full disk to complete (SQLite's default on big disks).
        self.db = schema.database(path, config.synchronous, wal_pages(self.reserve.size))
        self._disk_full = disk_full  # set on ENOSPC, cleared when the reserve is back
        self._drops = DropCounters(path)
        self._txn = threading.local()  # per-thread undo list of the open write transaction
        self._free_checked_at = -1e18
        self._free_bytes = 1 << 62
        self._age_checked_at = -1e18
        self._file_checked_at = time.monotonic()
        self._identity = _identity(path)
        self._gone: SpoolGoneError | None = None
        self._epochs: EpochMap | None = None  # loaded on first use (read-only opens skip it)
        self._unsynced_lock = threading.Lock()
        self._unsynced_deletes = 0
        # Rows committed by this process: a counter the bridge compares (no query)
        # and callbacks that wake it; other processes show through data_version().
        self.appended = AppendSignal()

    # ---------------------------------------------------------- new rows

    @mapped("check for changes")
    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version`` of this thread's connection.

        It changes when another connection (another thread or process, e.g.
        ``mqttspool enqueue``) commits; it costs no page read, so a waiting
        reader may call it on a timer instead of querying the tables.
        """
        return int(self.db.execute_sql("PRAGMA data_version").fetchone()[0])

    # ----------------------------------------------------------------- ingest

    @mapped("store readings")
    def append(
        self, readings: Sequence[Reading], clock_stamped: bool | Sequence[bool] = False
    ) -> AppendResult:
        """Store ``readings`` in one transaction; returns after commit.

        ``clock_stamped`` says, for all readings or one per reading, whether its
        ``ts`` was taken from this host's clock when it was spooled (the sampler;
        ``enqueue`` for a line without ``ts``): only those may be re-timed by
        :meth:`correct_clock`. A caller-supplied ``ts`` is never rewritten.

        When a bound (``max_rows``, ``min_free_bytes``) or a full disk gets in
        the way, ``spool.overflow`` decides what is dropped; every drop is
        counted by reason. Raises :class:`SpoolFullError` when nothing of
        ``readings`` could be stored (the readings are counted as dropped).
        """
        if not readings:
            return AppendResult([])
        self._maybe_check_file()
        self._maybe_expire()
        stamped = _flags(clock_stamped, len(readings))
        boot, mono = self.clock.boot_id(), self.clock.mono_ns()
        rows = [
            (r.device, r.sensor, r.metric, r.value, r.unit, r.ts_us, r.time_synced, boot, mono, s)
            for r, s in zip(readings, stamped, strict=True)
        ]
        if self._disk_full and not self._space_is_back():
            # Do not spend the headroom that deletes and drop counters need.
            return self._append_on_full_disk(rows)
        try:
            return self._append_rows(rows)
        except DB_ERRORS as exc:
            if not is_full(exc, self.path):
                raise
        return self._append_on_full_disk(rows)

    def _append_rows(self, rows: list[tuple[Any, ...]]) -> AppendResult:
        dropped: Counter[str] = Counter()
        with self._write() as cur:
            rows = self._make_room(cur, rows, dropped)
            # No count update: the new seqs above count.reading_hwm count them (schema 3).
            seqs = _insert(cur, rows)
            self._persist_drops(cur, dropped)
        if seqs:
            self.appended.fire()
        self._drops.log(dropped)
        return AppendResult(seqs, dict(dropped))

    def _append_on_full_disk(self, rows: list[tuple[Any, ...]]) -> AppendResult:
        """Disk full: use the reserve, apply the overflow policy once, else count the batch."""
        self._enter_full()
        if self.config.overflow == "drop_oldest":
            with contextlib.suppress(*DB_ERRORS):
                freed = self._drop_oldest_now(len(rows), "disk_full")
                if freed:
                    with contextlib.suppress(*DB_ERRORS):
                        stored = self._append_rows(rows)
                        dropped = Counter(stored.dropped) + Counter(disk_full=freed)
                        return AppendResult(stored.seqs, dict(dropped))
        self._drops.count_pending("disk_full", len(rows))
        self._flush_pending()
        raise SpoolFullError(
            self.path,
            f"disk full: {len(rows)} reading(s) not stored (counted as dropped, reason"
            " disk_full); free space on the spool's filesystem",
            dropped=len(rows),
        )

    def _make_room(
        self, cur: sqlite3.Cursor, rows: list[tuple[Any, ...]], dropped: Counter[str]
    ) -> list[tuple[Any, ...]]:
        """Apply the bounds inside the write transaction; returns the rows that may be added.

        ``drop_oldest`` deletes the oldest queued rows (and, if the batch alone is
        over ``max_rows``, the oldest of the batch); ``drop_newest`` refuses the
        newest rows of the batch instead.
        """
        cfg, n = self.config, len(rows)
        if self._free_space() < cfg.min_free_bytes:
            if cfg.overflow == "drop_newest":
                dropped["min_free_bytes"] += n
                return []
            dropped["min_free_bytes"] += _delete_oldest(cur, n)
        excess = self._depth_for_bound(cur, n) + n - cfg.max_rows
        if excess <= 0:
            return rows
        if cfg.overflow == "drop_newest":
            keep = max(0, n - excess)
            dropped["max_rows"] += n - keep
            return rows[:keep]
        dropped["max_rows"] += _delete_oldest(cur, excess)
        keep = min(n, cfg.max_rows)
        dropped["max_rows"] += n - keep
        return rows[n - keep :]

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
        return int(cur.execute("SELECT COUNT(*) FROM reading").fetchone()[0])

    def _drop_oldest_now(self, n: int, reason: str) -> int:
        dropped: Counter[str] = Counter()
        with self._write() as cur:
            dropped[reason] = _delete_oldest(cur, n)
            self._persist_drops(cur, dropped)
        self._drops.log(dropped)
        return dropped[reason]

    def _free_space(self) -> int:
        now = time.monotonic()
        if now - self._free_checked_at >= FREE_SPACE_CHECK_S:
            self._free_bytes = free_bytes(self.path.parent)
            self._free_checked_at = now
            if not self.reserve.held():
                self._space_is_back()
        return self._free_bytes

    def _enter_full(self) -> None:
        """ENOSPC: give back the reserve and the WAL's slack so deletes can commit."""
        self._disk_full = True
        self.reserve.release()
        self._checkpoint()

    def _space_is_back(self) -> bool:
        """Leave the full state once headroom is assured again."""
        if self.reserve.ensure():
            if self._disk_full:
                logger.warning("spool %s: disk space is back; reserve restored", self.path)
            self._disk_full = False
        return not self._disk_full

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it, returning its space to the disk."""
        with contextlib.suppress(*DB_ERRORS):
            self.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def _maybe_expire(self) -> None:
        if self.config.max_age <= 0:
            return
        now = time.monotonic()
        if now - self._age_checked_at >= AGE_CHECK_S:
            self._age_checked_at = now
            # A full disk may refuse even the delete; the append that follows
            # applies the overflow policy and reports it.
            with contextlib.suppress(SpoolFullError):
                self.expire()

    @mapped("expire old readings")
    def expire(self) -> int:
        """Drop rows older than ``spool.max_age`` (reason ``max_age``); returns the count.

        Age is judged only where it can be trusted: by the timestamp of rows
        taken with a synchronized clock, or by monotonic time for rows
        spooled during the current boot.
        """
        if self.config.max_age <= 0:
            return 0
        max_age = self.config.max_age
        cutoff_us = self.clock.wall_us() - int(max_age * 1_000_000)
        cutoff_mono = self.clock.mono_ns() - int(max_age * 1_000_000_000)
        dropped: Counter[str] = Counter()
        with self._write() as cur:
            cur.execute(
                "DELETE FROM reading WHERE (time_synced = 1 AND ts_us < ?)"
                " OR (boot_id = ? AND mono_ns < ?)",
                (cutoff_us, self.clock.boot_id(), cutoff_mono),
            )
            dropped["max_age"] = cur.rowcount
            _add_reading_count(cur, -cur.rowcount)
            self._persist_drops(cur, dropped)
        self._drops.log(dropped)
        return dropped["max_age"]

    # ------------------------------------------------------------------ drain

    @mapped("read queued readings")
    def rows_after(self, seq: int, limit: int, through: int | None = None) -> list[StoredReading]:
        """Up to ``limit`` queued rows after ``seq`` (and up to ``through``), oldest first.

        The bridge keeps its own cursor over these; the spool remembers nothing.
        """
        if limit <= 0:
            return []
        if through is None:
            return self._select("seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return self._select("seq > ? AND seq <= ? ORDER BY seq LIMIT ?", (seq, through, limit))

    @mapped("read the newest seq")
    def newest_seq(self) -> int:
        """The highest seq queued now (0 when empty): where "new arrivals" begin."""
        row = self.db.execute_sql("SELECT MAX(seq) FROM reading").fetchone()
        return int(row[0] or 0)

    @mapped("delete acknowledged readings")
    def settle(
        self, acked: Iterable[int], rejected: Iterable[Rejection] = (), durable: bool = False
    ) -> None:
        """Delete acknowledged rows and dead-letter rejected ones, in one transaction.

        Unless ``durable``, this commit is not fsynced (``synchronous=NORMAL``
        for it alone, still crash-safe in WAL mode): losing it to a power cut
        only means those rows are sent again, which at-least-once allows, while
        an fsync per batch of PUBACKs would cap the drain rate. Such rows are
        counted in :attr:`unsynced_deletes` until an fsynced commit of this
        spool (a sampling round at FULL, a ``durable`` settle) covers them; the
        bridge counts them against its window and asks for ``durable`` before
        they would fill it, so a power cut resends at most the window. A full
        disk releases the reserve and retries.
        """
        acked, rejected = list(acked), list(rejected)
        if not acked and not rejected:
            return
        self._maybe_check_file()
        now = self.clock.wall_us()
        with self._synchronous("FULL" if durable else "NORMAL"):
            deleted = self._on_full_retry(lambda: self._settle_once(acked, rejected, now))
        if not durable:
            with self._unsynced_lock:
                self._unsynced_deletes += deleted
        # No log line per rejected row here: the bridge logs them rate-limited, with a summary.

    def _settle_once(self, acked: list[int], rejected: list[Rejection], now: int) -> int:
        with self._write() as cur:
            deleted = 0
            for i in range(0, len(acked), DELETE_CHUNK):
                chunk = acked[i : i + DELETE_CHUNK]
                cur.execute(
                    f"DELETE FROM reading WHERE seq IN ({','.join('?' * len(chunk))})", chunk
                )
                deleted += cur.rowcount
            for rej in rejected:
                cur.execute(
                    f"INSERT OR REPLACE INTO dead_letter ({_COLUMNS}, code, reason,"
                    f" failed_at_us) SELECT {_COLUMNS}, ?, ?, ? FROM reading WHERE seq = ?",
                    (rej.code, rej.reason, now, rej.seq),
                )
                cur.execute("DELETE FROM reading WHERE seq = ?", (rej.seq,))
                deleted += cur.rowcount
            _add_reading_count(cur, -deleted)
            if rejected:
                _sync_dead_count(cur)
            if acked:
                _meta_set(cur, "last_publish_us", str(now))
            self._persist_drops(cur, Counter())
        return deleted

    @mapped("make deletes durable")
    def sync_deletes(self) -> None:
        """Fsync now, so every earlier :meth:`settle` is durable (:attr:`unsynced_deletes` 0).

        One small FULL commit: its WAL fsync covers every earlier commit.
        """
        if self._unsynced_deletes:
            with self._synchronous("FULL"), self._write() as cur:
                _meta_set(cur, "deletes_synced_ns", str(time.time_ns()))

    def ack(self, seqs: Iterable[int]) -> None:
        """Delete acknowledged rows (one transaction)."""
        self.settle(seqs)

    def dead_letter(self, seq: int, code: int, reason: str) -> None:
        """Move one row to ``dead_letter`` with the broker's reason."""
        self.settle((), [Rejection(seq, code, reason)])

    # ----------------------------------------------------------------- epochs

    @mapped("read the epochs")
    def epoch_of(self, seq: int) -> str:
        """The epoch of the row with ``seq``: its id is ``device:epoch:seq``."""
        if self._epochs is None:
            self._epochs = EpochMap(read_starts(self.db.execute_sql), self.epoch)
        return self._epochs.of(seq)

    @mapped("record the start of a run")
    def begin_writing(self) -> EpochChange | None:
        """Record that a ``run``/``drain`` owns the spool; begin a new epoch if one is needed.

        After an unclean stop that could have lost commits (see
        :func:`~mqttspool.spool.epochs.new_epoch_reason`) a new epoch starts
        above the high-water mark. The record (and the new epoch) is committed
        at FULL, so it is durable before the first reading gets a seq. A full
        disk releases the reserve and retries (a start must not fail on it).
        """
        with self._synchronous("FULL"):
            change = self._on_full_retry(self._begin_writing_once)
        if change is not None:
            self.epoch, self._epochs = change.new, None
            logger.warning(
                "spool %s: new epoch %s (was %s) from seq %d: %s; queued readings keep their"
                " ids, new ones cannot collide with ids already published",
                self.path,
                change.new,
                change.old,
                change.first_seq,
                change.reason,
            )
        return change

    def _begin_writing_once(self) -> EpochChange | None:
        with self._write() as cur:
            row = cur.execute("SELECT value FROM meta WHERE key = ?", (SHUTDOWN_KEY,)).fetchone()
            reason = new_epoch_reason(None if row is None else str(row[0]), self.config.synchronous)
            if reason is None:
                change = None
            else:
                token, first = begin_epoch(cur)
                change = EpochChange(self.epoch, token, reason, first)
            _meta_set(cur, SHUTDOWN_KEY, running_marker(self.config.synchronous))
        return change

    @mapped("record a clean shutdown")
    def mark_clean(self) -> None:
        """Record a clean stop, at FULL: every earlier commit is durable with it."""

        def once() -> None:
            with self._write() as cur:
                _meta_set(cur, SHUTDOWN_KEY, CLEAN)

        with self._synchronous("FULL"):
            self._on_full_retry(once)

    # ------------------------------------------------------------ dead letters

    @mapped("list dead letters")
    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """Rejected rows, oldest seq first."""
        sql = f"SELECT {_COLUMNS}, code, reason, failed_at_us FROM dead_letter ORDER BY seq"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        rows = self.db.execute_sql(sql, params).fetchall()
        return [DeadLetter(_stored(r[:8]), int(r[8]), str(r[9]), int(r[10])) for r in rows]

    @mapped("requeue dead letters")
    def requeue(self, seqs: Sequence[int] | None) -> int:
        """Move dead letters back into the queue with their original seq (None: all)."""
        where, params = _seq_filter(seqs)
        with self._write() as cur:
            _fold_reading_count(cur)  # bring the count up to date before seqs go in
            cur.execute(
                f"INSERT OR IGNORE INTO reading ({_COLUMNS}, boot_id, mono_ns)"
                f" SELECT {_COLUMNS}, '', 0 FROM dead_letter {where}",
                params,
            )
            moved = int(cur.rowcount)
            _count_inserted_with_seq(cur, moved)
            cur.execute(f"DELETE FROM dead_letter {where}", params)
            _sync_dead_count(cur)
        if moved:
            self.appended.fire()
        return moved

    @mapped("purge dead letters")
    def purge(self, seqs: Sequence[int] | None) -> int:
        """Delete dead letters for good, counted as dropped with reason ``purged``."""
        where, params = _seq_filter(seqs)
        dropped: Counter[str] = Counter()

        def once() -> None:
            with self._write() as cur:
                cur.execute(f"DELETE FROM dead_letter {where}", params)
                dropped["purged"] = cur.rowcount
                _sync_dead_count(cur)
                self._persist_drops(cur, dropped)

        self._on_full_retry(once)
        return dropped["purged"]

    # ------------------------------------------------------------ observation

    @mapped("read statistics")
    def stats(self) -> SpoolStats:
        """Depth, oldest timestamp, dead letters, drops by reason, last publish."""
        q = self.db.execute_sql
        depth = int(q("SELECT COUNT(*) FROM reading").fetchone()[0])
        oldest = q("SELECT ts_us FROM reading ORDER BY seq LIMIT 1").fetchone()
        dead = int(q("SELECT COUNT(*) FROM dead_letter").fetchone()[0])
        meta = dict(q("SELECT key, value FROM meta").fetchall())
        dropped = Counter(
            {
                k.removeprefix("dropped."): int(v)
                for k, v in meta.items()
                if k.startswith("dropped.")
            }
        )
        dropped.update(self._drops.pending())
        last = meta.get("last_publish_us")
        return SpoolStats(
            path=str(self.path),
            epoch=self.epoch,
            depth=depth,
            oldest_ts_us=int(oldest[0]) if oldest else None,
            dead_letters=dead,
            dropped=dict(sorted(dropped.items())),
            last_publish_us=int(last) if last else None,
        )

    @mapped("count queued readings")
    def depth(self) -> int:
        """Number of queued readings."""
        return int(self.db.execute_sql("SELECT COUNT(*) FROM reading").fetchone()[0])

    @mapped("read the high-water mark")
    def high_water_seq(self) -> int:
        """The highest seq ever assigned (never reused, even after deletes)."""
        row = self.db.execute_sql(
            "SELECT seq FROM sqlite_sequence WHERE name = 'reading'"
        ).fetchone()
        return int(row[0]) if row else 0

    @mapped("list queued seqs")
    def all_seqs(self) -> list[int]:
        """Every queued seq (for tests and salvage checks)."""
        rows = self.db.execute_sql("SELECT seq FROM reading ORDER BY seq").fetchall()
        return [int(r[0]) for r in rows]

    @mapped("read a meta value")
    def read_meta(self, key: str) -> str | None:
        """One value of the meta table."""
        row = self.db.execute_sql("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @mapped("write a meta value")
    def write_meta(self, key: str, value: str) -> None:
        """Set one value of the meta table."""
        with self._write() as cur:
            _meta_set(cur, key, value)

    @mapped("count dropped readings")
    def count_drop(self, reason: str, n: int = 1) -> None:
        """Count readings lost before they reached the spool (e.g. sampler overflow).

        The count is persisted at once if the disk allows (using the reserve
        when full), else by the next transaction that commits.
        """
        self._drops.count_pending(reason, n)
        self._flush_pending()

    @mapped("check integrity")
    def integrity_ok(self) -> bool:
        """``PRAGMA quick_check`` says ok."""
        try:
            rows = self.db.execute_sql("PRAGMA quick_check").fetchall()
        except DB_ERRORS as exc:
            if is_corrupt(exc):
                return False
            raise
        return [r[0] for r in rows] == ["ok"]

    @mapped("re-time readings after clock sync")
    def correct_clock(self, boot_id: str, wall_us: int, mono_ns: int) -> int:
        """Re-time rows this boot stamped with its unsynchronized clock; returns how many.

        ``wall_us``/``mono_ns`` are a synchronized wall time and the monotonic
        time taken together; each row of ``boot_id`` that was appended with
        ``clock_stamped`` and ``time_synced=false`` gets
        ``ts_us = wall_us - (mono_ns - row.mono_ns) // 1000`` and
        ``time_synced = 1``, in one transaction. Rows with a caller-supplied
        ``ts`` keep it. Rows already sent are gone from the queue, so they keep
        ``time_synced=false`` (docs/sensors.md).
        """
        with self._write() as cur:
            cur.execute(
                "UPDATE reading SET ts_us = ? - (? - mono_ns) / 1000, time_synced = 1"
                " WHERE boot_id = ? AND time_synced = 0 AND clock_stamped = 1",
                (wall_us, mono_ns, boot_id),
            )
            return int(cur.rowcount)

    @mapped("check the spool file")
    def check_file(self) -> None:
        """Raise :class:`SpoolGoneError` if the file at ``path`` is no longer the one we opened."""
        self._file_checked_at = time.monotonic()
        now = _identity(self.path)
        if now is not None and now == self._identity:
            return
        what = "deleted" if now is None else "replaced by another file"
        # A new file at the path shares the -wal/-shm names with the old one,
        # so what this connection reads then is no reliable count.
        stranded = self._stranded() if now is None else None
        held = "an unknown number of" if stranded is None else str(stranded)
        self._gone = SpoolGoneError(
            self.path,
            f"was {what} while open; {held} queued reading(s) remain in the unlinked file"
            " and will not be delivered. Stop mqttspool, restore the file if you can"
            " (e.g. from /proc/<pid>/fd while it runs), then start it again",
            stranded,
        )
        raise self._gone

    def _on_database_error(self) -> None:
        """Called by the error mapping: a vanished file explains errors better than SQLite."""
        if self._identity is not None and _identity(self.path) != self._identity:
            self.check_file()

    @mapped("close")
    def close(self) -> None:
        """Close this thread's connection (others close as their threads end).

        Drop counts still pending (a full disk refused them) are written first
        if the disk allows, so a short-lived ``enqueue`` does not lose them.
        """
        if self._drops.pending():
            self._flush_pending()
        if not self.db.is_closed():
            self.db.close()

    # --------------------------------------------------------------- helpers

    def _stranded(self) -> int | None:
        try:
            return int(self.db.execute_sql("SELECT COUNT(*) FROM reading").fetchone()[0])
        except DB_ERRORS:
            return None

    def _maybe_check_file(self) -> None:
        if self._gone is not None:
            raise self._gone  # once gone, every write says so (callers may retry)
        if time.monotonic() - self._file_checked_at >= FILE_CHECK_S:
            self.check_file()

    def _on_full_retry(self, write: Callable[[], _T]) -> _T:
        """Run ``write``; on a full disk release the reserve and the WAL, run it once more."""
        try:
            return write()
        except DB_ERRORS as exc:
            if not is_full(exc, self.path):
                raise
        self._enter_full()
        return write()

    def _flush_pending(self) -> None:
        """Persist pending drop counts now, with the reserve's help if the disk is full."""

        def once() -> None:
            with self._write() as cur:
                self._persist_drops(cur, Counter())

        with contextlib.suppress(*DB_ERRORS):
            self._on_full_retry(once)

    @contextlib.contextmanager
    def _synchronous(self, level: str) -> Iterator[None]:
        """Run the next writes of this thread at ``level`` (FULL: fsynced; NORMAL), then restore."""
        self.db.execute_sql(f"PRAGMA synchronous = {level}")
        self._txn.level = level
        try:
            yield
        finally:
            self._txn.level = None
            self.db.execute_sql(f"PRAGMA synchronous = {self.config.synchronous.upper()}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        # Our own BEGIN/COMMIT rather than peewee's atomic(): on SQLITE_FULL
        # SQLite may already have rolled the transaction back, and peewee's
        # unconditional ROLLBACK would then replace the real error with
        # "cannot rollback - no transaction is active".
        conn = self.db.connection()
        cur = conn.cursor()
        self._txn.undo = []
        cur.execute("BEGIN IMMEDIATE")
        # Exact while we hold the write lock: every delete counted so far committed before us.
        unsynced = self._unsynced_deletes
        try:
            yield cur
            cur.execute("COMMIT")
            if (getattr(self._txn, "level", None) or self.config.synchronous.upper()) == "FULL":
                self._covered(unsynced)  # the WAL fsync made the earlier commits durable too
            if self._disk_full:
                self._checkpoint()  # hand the WAL's new frames back at once
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
            for undo in self._txn.undo:
                undo()
            raise
        finally:
            self._txn.undo = []

    def _covered(self, n: int) -> None:
        with self._unsynced_lock:
            self._unsynced_deletes -= n

    @property
    def unsynced_deletes(self) -> int:
        """Rows :meth:`settle` deleted in commits not yet fsynced: a power cut would bring
        them back (and the bridge send them again)."""
        return self._unsynced_deletes

    def _persist_drops(self, cur: sqlite3.Cursor, dropped: Counter[str]) -> None:
        self._drops.persist(cur, dropped, self._txn.undo.append)

    def _select(self, where: str, params: tuple[Any, ...]) -> list[StoredReading]:
        sql = f"SELECT {_COLUMNS} FROM reading WHERE {where}"
        return [_stored(r) for r in self.db.execute_sql(sql, params).fetchall()]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _flags(clock_stamped: bool | Sequence[bool], n: int) -> list[bool]:
    if isinstance(clock_stamped, bool):
        return [clock_stamped] * n
    if len(clock_stamped) != n:
        raise ValueError(f"clock_stamped has {len(clock_stamped)} flags for {n} readings")
    return [bool(s) for s in clock_stamped]


def _insert(cur: sqlite3.Cursor, rows: list[tuple[Any, ...]]) -> list[int]:
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


def _delete_oldest(cur: sqlite3.Cursor, n: int) -> int:
    cur.execute(
        "DELETE FROM reading WHERE seq IN (SELECT seq FROM reading ORDER BY seq LIMIT ?)",
        (n,),
    )
    deleted = int(cur.rowcount)
    _add_reading_count(cur, -deleted)
    return deleted


def _add_reading_count(cur: sqlite3.Cursor, delta: int) -> None:
    """Count ``delta`` rows more (or fewer) in ``reading``; nothing is written for 0."""
    if delta:
        _fold_reading_count(cur, delta)


def _fold_reading_count(cur: sqlite3.Cursor, delta: int = 0) -> None:
    """Fold the rows appended since the mark into ``count.reading``, add ``delta`` and
    move the mark to the high-water seq (inside the caller's write transaction).

    Appends do not update the counter (schema 3, :func:`schema.queued_rows`); every
    other change of the table calls this.
    """
    cur.execute(
        "UPDATE meta SET value = CAST(value AS INTEGER) + ? + (" + schema.HWM_SQL + ")"
        " - (SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?) WHERE key = ?",
        (delta, schema.COUNT_READING_HWM, schema.COUNT_READING),
    )
    _set_reading_hwm(cur)


def _count_inserted_with_seq(cur: sqlite3.Cursor, n: int) -> None:
    """After ``n`` rows went in with their own (old) seqs, following
    :func:`_fold_reading_count`: count exactly them, even if one seq raised the
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


def _sync_dead_count(cur: sqlite3.Cursor) -> None:
    # The dead-letter table is small: recount it rather than track INSERT OR REPLACE.
    cur.execute(
        "UPDATE meta SET value = (SELECT COUNT(*) FROM dead_letter) WHERE key = ?",
        (schema.COUNT_DEAD,),
    )


def _stored(r: Sequence[Any]) -> StoredReading:
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


def _meta_set(cur: sqlite3.Cursor, key: str, value: str) -> None:
    cur.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _seq_filter(seqs: Sequence[int] | None) -> tuple[str, tuple[int, ...]]:
    if seqs is None:
        return "", ()
    if not seqs:
        return "WHERE 0", ()
    return f"WHERE seq IN ({','.join('?' * len(seqs))})", tuple(seqs)


def read_stats_json(stats: SpoolStats, device: str, now_us: int) -> dict[str, Any]:
    """The ``status --json`` / retained spool topic document (:class:`~mqttspool.wire.Snapshot`)."""
    last = stats.last_publish_us
    return Snapshot(
        device=device,
        epoch=stats.epoch,
        dead_letters=stats.dead_letters,
        dropped=stats.dropped,
        depth=stats.depth,
        oldest_age_seconds=stats.oldest_age_seconds(now_us),
        last_publish=None if last is None else format_ts(last),
        spool_path=stats.path,
    ).as_json()
