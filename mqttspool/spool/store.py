""":class:`Spool`: one SQLite spool file, a facade over the parts that each own one concern.

========================================  ===================================================
part                                      concern
========================================  ===================================================
:mod:`~mqttspool.spool.queue`             the queue: append with bounds, read, settle, expire
:mod:`~mqttspool.spool.deadletters`       dead letters: list, requeue, purge
:mod:`~mqttspool.spool.diskfull`          disk-full handling: the reserve, retry with headroom
:mod:`~mqttspool.spool.identity`          file identity: deleted or replaced while open
:mod:`~mqttspool.spool.durability`        write transactions, fsync policy, epochs
:mod:`~mqttspool.spool.stats`             the statistics snapshot
========================================  ===================================================

Threads: one :class:`Spool` may be shared by a writer thread (sampler) and the
bridge thread; peewee gives each thread its own SQLite connection and SQLite's
WAL lets readers and one writer proceed together. Other processes
(``mqttspool enqueue``, ``dead-letters requeue``) may write the same file at
the same time.

Every public method maps database errors through
:func:`~mqttspool.spool.dberrors.mapped`, so callers only ever see
:class:`~mqttspool.errors.SpoolError` and its subclasses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading, StoredReading
from mqttspool.spool import schema
from mqttspool.spool.dberrors import DB_ERRORS, is_corrupt, mapped
from mqttspool.spool.deadletters import DeadLetters
from mqttspool.spool.diskfull import DiskGuard
from mqttspool.spool.drops import DropCounters
from mqttspool.spool.durability import Durability
from mqttspool.spool.epochs import EpochChange
from mqttspool.spool.headroom import Reserve, wal_pages
from mqttspool.spool.identity import FileIdentity
from mqttspool.spool.queue import AppendSignal, Queue
from mqttspool.spool.rows import AppendResult, DeadLetter, Eviction, Rejection, counts
from mqttspool.spool.stats import SpoolStats, read_stats, read_stats_json
from mqttspool.timekeeping import Clock

__all__ = [
    "AppendResult",
    "AppendSignal",
    "DeadLetter",
    "Eviction",
    "Rejection",
    "Spool",
    "SpoolStats",
    "read_stats_json",
]


class Spool:
    """A durable FIFO of readings in one SQLite file. Use :func:`~mqttspool.spool.open_spool`."""

    def __init__(
        self, path: Path, config: SpoolConfig, clock: Clock, epoch: str, disk_full: bool = False
    ) -> None:
        """``disk_full``: the opener had to use the reserve to open; keep the rest for deletes."""
        self.path = path
        self.config = config
        self.clock = clock
        reserve_size = Reserve(path).size
        # The WAL's not-yet-checkpointed pages must fit in the reserve for a
        # checkpoint on a full disk to complete (SQLite's default on big disks).
        wal_limit = wal_pages(reserve_size, schema.page_size(path))
        db = schema.database(path, config.synchronous, wal_limit)
        self.disk = DiskGuard(path, db, disk_full)
        self.reserve = self.disk.reserve
        self._drops = DropCounters(path)
        self.durability = Durability(db, path, config, epoch, self.disk, self._drops)
        self.identity = FileIdentity(path, self._stranded)
        self.queue = Queue(config, clock, self.durability, self.disk, self.identity)
        self.dead = DeadLetters(self.durability, self.disk, self.queue.appended)
        self.appended: AppendSignal = self.queue.appended

    @property
    def db(self) -> Any:
        """The peewee database (one SQLite connection per thread), shared by every part."""
        return self.durability.db

    @db.setter
    def db(self, db: Any) -> None:
        self.durability.db = self.disk.db = db

    @property
    def epoch(self) -> str:
        """The current epoch: new rows get ids ``device:epoch:seq``."""
        return self.durability.epoch

    # ------------------------------------------------------------------ queue

    @mapped("check for changes")
    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version`` of this thread's connection.

        It changes when another connection (another thread or process, e.g.
        ``mqttspool enqueue``) commits; it costs no page read, so a waiting
        reader may call it on a timer instead of querying the tables.
        """
        return int(self.db.execute_sql("PRAGMA data_version").fetchone()[0])

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
        return self.queue.append(readings, clock_stamped)

    @mapped("expire old readings")
    def expire(self) -> int:
        """Drop rows older than ``spool.max_age`` (reason ``max_age``); returns the count.

        Age is judged only where it can be trusted: by the timestamp of rows
        taken with a synchronized clock, or by monotonic time for rows
        spooled during the current boot.
        """
        return self.queue.expire()

    @mapped("read queued readings")
    def rows_after(self, seq: int, limit: int, through: int | None = None) -> list[StoredReading]:
        """Up to ``limit`` queued rows after ``seq`` (and up to ``through``), oldest first.

        The bridge keeps its own cursor over these; the spool remembers nothing.
        """
        return self.queue.rows_after(seq, limit, through)

    @mapped("read the newest seq")
    def newest_seq(self) -> int:
        """The highest seq queued now (0 when empty): where "new arrivals" begin."""
        return self.queue.newest_seq()

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
        if acked or rejected:
            self.queue.settle(acked, rejected, durable)
        # No log line per rejected row here: the bridge logs them rate-limited, with a summary.

    @mapped("make deletes durable")
    def sync_deletes(self) -> None:
        """Fsync now, so every earlier :meth:`settle` is durable (:attr:`unsynced_deletes` 0).

        One small FULL commit: its WAL fsync covers every earlier commit.
        """
        self.durability.sync_deletes()

    @property
    def unsynced_deletes(self) -> int:
        """Rows :meth:`settle` deleted in commits not yet fsynced: a power cut would bring
        them back (and the bridge send them again)."""
        return self.durability.unsynced_deletes

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
        return self.queue.correct_clock(boot_id, wall_us, mono_ns)

    # ---------------------------------------------------------------- epochs

    @mapped("read the epochs")
    def epoch_of(self, seq: int) -> str:
        """The epoch of the row with ``seq``: its id is ``device:epoch:seq``."""
        return self.durability.epoch_of(seq)

    @mapped("record the start of a run")
    def begin_writing(self) -> EpochChange | None:
        """Record that a ``run``/``drain`` owns the spool; begin a new epoch if one is needed.

        After an unclean stop that could have lost commits (see
        :func:`~mqttspool.spool.epochs.new_epoch_reason`) a new epoch starts
        above the high-water mark. The record (and the new epoch) is committed
        at FULL, so it is durable before the first reading gets a seq. A full
        disk releases the reserve and retries (a start must not fail on it).
        Other writers need not call this: their first write fences by itself.
        """
        return self.durability.begin_writing()

    @mapped("record a clean shutdown")
    def mark_clean(self) -> None:
        """Record a clean stop, at FULL: every earlier commit is durable with it."""
        self.durability.mark_clean()

    # ---------------------------------------------------------- dead letters

    @mapped("list dead letters")
    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """Rejected rows, oldest seq first."""
        return self.dead.list(limit)

    @mapped("requeue dead letters")
    def requeue(self, seqs: Sequence[int] | None) -> int:
        """Move dead letters back into the queue with their original seq (None: all)."""
        return self.dead.requeue(seqs)

    @mapped("purge dead letters")
    def purge(self, seqs: Sequence[int] | None) -> int:
        """Delete dead letters for good, counted as dropped with reason ``purged``."""
        return self.dead.purge(seqs)

    # ----------------------------------------------------------- observation

    @mapped("read statistics")
    def stats(self) -> SpoolStats:
        """Depth, oldest timestamp, dead letters, drops by reason, last publish."""
        return read_stats(self.db.execute_sql, str(self.path), self.epoch, self._drops.pending())

    @mapped("count queued readings")
    def depth(self) -> int:
        """Number of queued readings (from the row counters: no table scan)."""
        return counts(self.db.execute_sql)[0]

    @mapped("count dropped readings")
    def count_drop(self, reason: str, n: int = 1) -> None:
        """Count readings lost before they reached the spool (e.g. sampler overflow).

        The count is persisted at once if the disk allows (using the reserve
        when full), else by the next transaction that commits.
        """
        self._drops.count_pending(reason, n)
        self.durability.flush_pending()

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

    @mapped("check the spool file")
    def check_file(self) -> None:
        """Raise :class:`SpoolGoneError` if the file at ``path`` is no longer the one we opened."""
        self.identity.check()

    def _on_database_error(self) -> None:
        """Called by the error mapping: a vanished file explains errors better than SQLite."""
        self.identity.on_database_error()

    @mapped("close")
    def close(self) -> None:
        """Close this thread's connection (others close as their threads end).

        Drop counts still pending (a full disk refused them) are written first
        if the disk allows, so a short-lived ``enqueue`` does not lose them.
        """
        if self._drops.pending():
            self.durability.flush_pending()
        if not self.db.is_closed():
            self.db.close()

    def _stranded(self) -> int | None:
        # Only on a connection this thread already has (it holds the unlinked file open):
        # peewee would open a new one for this thread at the path, creating an empty file.
        if self.db.is_closed():
            return None
        try:
            return int(self.db.execute_sql("SELECT COUNT(*) FROM reading").fetchone()[0])
        except DB_ERRORS:
            return None
