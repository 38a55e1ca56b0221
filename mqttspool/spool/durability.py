"""Durability of one spool: write transactions, fsync levels, unsynced deletes, epochs.

* Every write runs in :meth:`Durability.write`: our own ``BEGIN IMMEDIATE`` /
  ``COMMIT`` at ``spool.synchronous`` (FULL: the WAL is fsync'd at commit),
  or at a level chosen for one write (:meth:`Durability.synchronous`).
* Deletes of acknowledged rows commit without fsync and are counted in
  :attr:`Durability.unsynced_deletes` until an fsync'd commit covers them (a
  power cut would bring them back, so the bridge resends them).
* The first write of a process passes the epoch fence
  (:func:`~mqttspool.spool.epochs.fence`): after an unclean stop at NORMAL a
  new epoch begins before any new seq is handed out; ``run``/``drain`` record
  themselves with :meth:`Durability.begin_writing` and a clean stop with
  :meth:`Durability.mark_clean`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mqttspool.config import SpoolConfig
from mqttspool.spool.dberrors import DB_ERRORS
from mqttspool.spool.diskfull import DiskGuard
from mqttspool.spool.drops import DropCounters
from mqttspool.spool.epochs import (
    CLEAN,
    SHUTDOWN_KEY,
    EpochChange,
    EpochMap,
    Fenced,
    fence,
    read_starts,
)
from mqttspool.spool.ownership import lock_holder, writer_identity
from mqttspool.spool.rows import meta_set

logger = logging.getLogger(__name__)


class Durability:
    """Write transactions, fsync policy and epochs of one spool (shared by its threads)."""

    def __init__(
        self,
        db: Any,
        path: Path,
        config: SpoolConfig,
        epoch: str,
        disk: DiskGuard,
        drops: DropCounters,
    ) -> None:
        self.db = db
        self.path = path
        self.config = config
        self.epoch = epoch
        self.disk = disk
        self.drops = drops
        self._txn = threading.local()  # per-thread undo list and level of the open write
        self._epochs: EpochMap | None = None  # loaded on first use (read-only opens skip it)
        # The first write of this process decides whether a new epoch begins (epochs.fence).
        self._fence_lock = threading.Lock()
        self._fenced = False
        self._unsynced_lock = threading.Lock()
        self._unsynced_deletes = 0

    # ------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction; the first one of this process passes the epoch fence first."""
        self._ensure_fenced()
        with self._transaction() as cur:
            yield cur

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
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
            if self.disk.full:
                self.disk.checkpoint()  # hand the WAL's new frames back at once
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
            for undo in self._txn.undo:
                undo()
            raise
        finally:
            self._txn.undo = []

    @contextlib.contextmanager
    def synchronous(self, level: str) -> Iterator[None]:
        """Run the next writes of this thread at ``level`` (FULL: fsynced; NORMAL), then restore."""
        outer = getattr(self._txn, "level", None)  # the epoch fence nests in a first write
        self.db.execute_sql(f"PRAGMA synchronous = {level}")
        self._txn.level = level
        try:
            yield
        finally:
            self._txn.level = outer
            self.db.execute_sql(f"PRAGMA synchronous = {outer or self.config.synchronous.upper()}")

    def persist_drops(self, cur: sqlite3.Cursor, dropped: Counter[str]) -> None:
        """Add ``dropped`` and every pending drop count to ``meta`` in this transaction."""
        self.drops.persist(cur, dropped, self._txn.undo.append)

    def flush_pending(self) -> None:
        """Persist pending drop counts now, with the reserve's help if the disk is full."""

        def once() -> None:
            with self.write() as cur:
                self.persist_drops(cur, Counter())

        with contextlib.suppress(*DB_ERRORS):
            self.disk.retry(once)

    # ---------------------------------------------------------- unsynced deletes

    @property
    def unsynced_deletes(self) -> int:
        """Rows deleted in commits not yet fsynced: a power cut would bring them back."""
        return self._unsynced_deletes

    def count_unsynced(self, n: int) -> None:
        """``n`` more rows were deleted by a commit that was not fsync'd."""
        with self._unsynced_lock:
            self._unsynced_deletes += n

    def _covered(self, n: int) -> None:
        with self._unsynced_lock:
            self._unsynced_deletes -= n

    def sync_deletes(self) -> None:
        """Fsync now, so every earlier delete is durable (one small FULL commit)."""
        if self._unsynced_deletes:
            with self.synchronous("FULL"), self.write() as cur:
                meta_set(cur, "deletes_synced_ns", str(time.time_ns()))

    # ------------------------------------------------------------------ epochs

    def epoch_of(self, seq: int) -> str:
        """The epoch of the row with ``seq``."""
        if self._epochs is None:
            self._epochs = EpochMap(read_starts(self.db.execute_sql), self.epoch)
        return self._epochs.of(seq)

    def begin_writing(self) -> EpochChange | None:
        """A ``run``/``drain`` takes the spool: record it, begin a new epoch if needed."""
        with self._fence_lock:
            return self._fence(writer_identity())

    def mark_clean(self) -> None:
        """Record a clean stop, at FULL: every earlier commit is durable with it."""

        def once() -> None:
            with self.write() as cur:
                meta_set(cur, SHUTDOWN_KEY, CLEAN)

        with self.synchronous("FULL"):
            self.disk.retry(once)

    def _ensure_fenced(self) -> None:
        if self._fenced:
            return
        with self._fence_lock:
            if not self._fenced:
                self._fence(None)

    def _fence(self, owner: str | None) -> EpochChange | None:
        live = lock_holder(self.path)

        def once() -> Fenced:
            with self._transaction() as cur:
                return fence(cur, self.config.synchronous, owner, live)

        with self.synchronous("FULL"):
            fenced = self.disk.retry(once)
        self._fenced = True
        if fenced.epoch != self.epoch or fenced.change is not None:
            self.epoch, self._epochs = fenced.epoch, None
        if fenced.change is not None:
            _log_new_epoch(self.path, fenced.change)
        return fenced.change


def _log_new_epoch(path: Path, change: EpochChange) -> None:
    logger.warning(
        "spool %s: new epoch %s (was %s) from seq %d: %s; queued readings keep their"
        " ids, new ones cannot collide with ids already published",
        path,
        change.new,
        change.old,
        change.first_seq,
        change.reason,
    )
