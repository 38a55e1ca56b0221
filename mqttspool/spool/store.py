"""The durable spool: all SQL and every peewee model live here.

Tables: ``reading`` (the queue; ``seq`` is ``INTEGER PRIMARY KEY
AUTOINCREMENT`` so ids are never reused), ``dead_letter`` (rejected by the
broker, with reason code and text) and ``meta`` (epoch, persisted counters,
heartbeat). WAL journal, ``synchronous`` configurable, one transaction per
call to :meth:`Spool.append`.

Threads: one :class:`Spool` may be shared by a writer thread (sampler) and the
bridge thread; peewee gives each thread its own SQLite connection and SQLite's
WAL lets readers and one writer proceed together. Other processes
(``mqttspool enqueue``) may write the same file at the same time. Leases are
kept in memory only: after a crash every row still in ``reading`` is sent
again (at-least-once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import peewee as pw
from playhouse.sqlite_ext import AutoIncrementField

from mqttspool.config import SpoolConfig
from mqttspool.errors import (
    NotASpoolError,
    SpoolCorruptError,
    SpoolError,
    SpoolFullError,
)
from mqttspool.reading import Reading, StoredReading, format_ts
from mqttspool.spool.readonly import APPLICATION_ID
from mqttspool.timekeeping import Clock, SystemClock

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 10.0
FREE_SPACE_CHECK_S = 1.0
AGE_CHECK_S = 10.0
DROP_LOG_INTERVAL_S = 60.0
SALVAGE_CHUNK = 500
INSERT_CHUNK = 500  # rows per INSERT statement (9 parameters each)
NEAR_FULL_BYTES = 1 << 20  # an I/O error with less free space than this is a full disk

_COLUMNS = "seq, device, sensor, metric, value, unit, ts_us, time_synced"
# peewee wraps errors raised by execute(), but not those raised later while
# fetching rows, nor those of the raw cursors used inside transactions.
DB_ERRORS = (pw.DatabaseError, sqlite3.DatabaseError)


class _Model(pw.Model):
    class Meta:
        database = pw.DatabaseProxy()
        legacy_table_names = False


class _ReadingColumns(_Model):
    """The columns a reading has in both the queue and the dead-letter table."""

    device = pw.TextField()
    sensor = pw.TextField()
    metric = pw.TextField()
    value = pw.FloatField()
    unit = pw.TextField(null=True)
    ts_us = pw.BigIntegerField()
    time_synced = pw.BooleanField()


class ReadingRow(_ReadingColumns):
    """The queue: one row per accepted reading, deleted on PUBACK."""

    seq = AutoIncrementField()
    boot_id = pw.TextField()
    mono_ns = pw.BigIntegerField()

    class Meta:
        table_name = "reading"


class DeadLetterRow(_ReadingColumns):
    """Readings the broker refused, kept with the reason until requeued or purged."""

    seq = pw.IntegerField(primary_key=True)
    code = pw.IntegerField()
    reason = pw.TextField()
    failed_at_us = pw.BigIntegerField()

    class Meta:
        table_name = "dead_letter"


class MetaRow(_Model):
    """Key/value facts: epoch, counters (``dropped.<reason>``), heartbeat."""

    key = pw.TextField(primary_key=True)
    value = pw.TextField()

    class Meta:
        table_name = "meta"


MODELS: list[type[_Model]] = [ReadingRow, DeadLetterRow, MetaRow]


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


def classify_file(path: Path) -> str:
    """``missing``, ``empty``, ``ours``, ``foreign`` (SQLite of another app) or ``not_sqlite``."""
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
    except FileNotFoundError:
        return "missing"
    except IsADirectoryError as exc:
        raise SpoolError(path, "is a directory; set spool.path to a file") from exc
    except OSError as exc:
        raise SpoolError(path, f"cannot read: {exc.strerror}") from exc
    if not header:
        return "empty"
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        return "not_sqlite"
    if int.from_bytes(header[68:72], "big") == APPLICATION_ID:
        return "ours"
    return "foreign"


def sqlite_error_code(exc: BaseException) -> int | None:
    """The SQLite primary result code behind ``exc`` (peewee wraps sqlite3 errors)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        code = getattr(cur, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF
        stack.extend(a for a in cur.args if isinstance(a, BaseException))
        stack.extend([cur.__cause__, cur.__context__])
    return None


def _is_full(exc: BaseException, path: Path) -> bool:
    code = sqlite_error_code(exc)
    if code == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        return True
    # ENOSPC while SQLite grows the -shm or -wal file surfaces as SQLITE_IOERR_*
    # (e.g. IOERR_SHMSIZE); Python does not expose errno, so ask the filesystem.
    return code == sqlite3.SQLITE_IOERR and _free_bytes(path.parent) < NEAR_FULL_BYTES


def _free_bytes(directory: Path) -> int:
    try:
        st = os.statvfs(directory)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def _is_corrupt(exc: BaseException) -> bool:
    return sqlite_error_code(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class _DropLog:
    """Counts drops and logs them at most once per interval per reason."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()
        self._lock = threading.Lock()

    def note(self, reason: str, n: int, path: Path) -> None:
        with self._lock:
            self._unlogged[reason] += n
            now = time.monotonic()
            if now - self._last.get(reason, -1e18) < self._interval:
                return
            count, self._unlogged[reason] = self._unlogged[reason], 0
            self._last[reason] = now
        logger.warning(
            "spool %s: dropped %d reading(s), reason %s (logged at most once per %ds)",
            path,
            count,
            reason,
            int(self._interval),
        )


class Spool:
    """A durable FIFO of readings in one SQLite file. Use :func:`open_spool`."""

    def __init__(self, path: Path, config: SpoolConfig, clock: Clock, epoch: str) -> None:
        self.path = path
        self.config = config
        self.clock = clock
        self.epoch = epoch
        self.db = _database(path, config.synchronous)
        self._pending_drops: Counter[str] = Counter()
        self._drops_lock = threading.Lock()
        self._txn = threading.local()  # per-thread undo list of the open write transaction
        self._drop_log = _DropLog(DROP_LOG_INTERVAL_S)
        self._free_checked_at = -1e18
        self._free_bytes = 1 << 62
        self._age_checked_at = -1e18
        # Lease cursors (bridge thread only).
        self._cursor = 0
        self._live_cursor = 0
        self._backlog_end: int | None = None
        self._live_done = False

    # ----------------------------------------------------------------- ingest

    def append(self, readings: Sequence[Reading]) -> AppendResult:
        """Store ``readings`` in one transaction; returns after commit.

        When a bound (``max_rows``, ``min_free_bytes``) or a full disk gets in
        the way, ``spool.overflow`` decides what is dropped; every drop is
        counted by reason. Raises :class:`SpoolFullError` when nothing of
        ``readings`` could be stored (the readings are counted as dropped).
        """
        if not readings:
            return AppendResult([])
        self._maybe_expire()
        boot, mono = self.clock.boot_id(), self.clock.mono_ns()
        rows = [
            (r.device, r.sensor, r.metric, r.value, r.unit, r.ts_us, r.time_synced, boot, mono)
            for r in readings
        ]
        try:
            return self._append_rows(rows)
        except DB_ERRORS as exc:
            if _is_corrupt(exc):
                raise SpoolCorruptError(self.path, f"SQLite reports corruption: {exc}") from exc
            if not _is_full(exc, self.path):
                raise SpoolError(self.path, f"write failed: {exc}") from exc
        return self._append_on_full_disk(rows)

    def _append_rows(self, rows: list[tuple[Any, ...]]) -> AppendResult:
        dropped: Counter[str] = Counter()
        with self._write() as cur:
            rows = self._make_room(cur, rows, dropped)
            seqs: list[int] = []
            if rows:
                hi = 0
                # Multi-row INSERTs: one statement per chunk, and lastrowid (which
                # executemany leaves unset) gives the seqs without another query.
                # One writer holds the lock, so the seqs of one call are consecutive.
                for i in range(0, len(rows), INSERT_CHUNK):
                    chunk = rows[i : i + INSERT_CHUNK]
                    cur.execute(
                        "INSERT INTO reading (device, sensor, metric, value, unit, ts_us,"
                        " time_synced, boot_id, mono_ns) VALUES "
                        + ",".join(["(?,?,?,?,?,?,?,?,?)"] * len(chunk)),
                        [v for row in chunk for v in row],
                    )
                    hi = int(cur.lastrowid or 0)
                seqs = list(range(hi - len(rows) + 1, hi + 1))
            self._persist_drops(cur, dropped)
        self._log_drops(dropped)
        return AppendResult(seqs, dict(dropped))

    def _append_on_full_disk(self, rows: list[tuple[Any, ...]]) -> AppendResult:
        """SQLITE_FULL: apply the overflow policy once, then give up on this batch."""
        if self.config.overflow == "drop_oldest":
            with contextlib.suppress(*DB_ERRORS):
                freed = self._drop_oldest_now(len(rows), "disk_full")
                if freed:
                    with contextlib.suppress(*DB_ERRORS):
                        return self._append_rows(rows)
        self._count_pending("disk_full", len(rows))
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
            dropped["min_free_bytes"] += self._delete_oldest(cur, n)
        excess = self._depth_for_bound(cur, n) + n - cfg.max_rows
        if excess <= 0:
            return rows
        if cfg.overflow == "drop_newest":
            keep = max(0, n - excess)
            dropped["max_rows"] += n - keep
            return rows[:keep]
        dropped["max_rows"] += self._delete_oldest(cur, excess)
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

    @staticmethod
    def _delete_oldest(cur: sqlite3.Cursor, n: int) -> int:
        cur.execute(
            "DELETE FROM reading WHERE seq IN (SELECT seq FROM reading ORDER BY seq LIMIT ?)",
            (n,),
        )
        return cur.rowcount

    def _drop_oldest_now(self, n: int, reason: str) -> int:
        dropped: Counter[str] = Counter()
        with self._write() as cur:
            dropped[reason] = self._delete_oldest(cur, n)
            self._persist_drops(cur, dropped)
        self._log_drops(dropped)
        return dropped[reason]

    def _free_space(self) -> int:
        now = time.monotonic()
        if now - self._free_checked_at >= FREE_SPACE_CHECK_S:
            try:
                st = os.statvfs(self.path.parent)
                self._free_bytes = st.f_bavail * st.f_frsize
            except OSError:
                self._free_bytes = 1 << 62
            self._free_checked_at = now
        return self._free_bytes

    def _maybe_expire(self) -> None:
        if self.config.max_age <= 0:
            return
        now = time.monotonic()
        if now - self._age_checked_at >= AGE_CHECK_S:
            self._age_checked_at = now
            try:
                self.expire()
            except DB_ERRORS as exc:
                # A full disk may refuse even the delete; the append that
                # follows applies the overflow policy and reports it.
                if not _is_full(exc, self.path):
                    raise self._translate(exc, "expire old readings") from exc

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
            self._persist_drops(cur, dropped)
        self._log_drops(dropped)
        return dropped["max_age"]

    # ------------------------------------------------------------------ drain

    def lease(self, n: int, live_first: bool = False) -> list[StoredReading]:
        """Up to ``n`` rows not yet leased, oldest first (or newly arrived first).

        Leases live in memory only: :meth:`release_leases` (after a disconnect)
        makes every row still in the spool leasable again.
        """
        if n <= 0:
            return []
        try:
            if live_first and not self._live_done:
                return self._lease_live_first(n)
            rows = self._select("seq > ? ORDER BY seq LIMIT ?", (self._cursor, n))
        except DB_ERRORS as exc:
            raise self._translate(exc, "read") from exc
        if rows:
            self._cursor = rows[-1].seq
        return rows

    def _lease_live_first(self, n: int) -> list[StoredReading]:
        if self._backlog_end is None:
            self._backlog_end = self._max_seq()
            self._live_cursor = self._backlog_end
        live = self._select("seq > ? ORDER BY seq LIMIT ?", (self._live_cursor, n))
        if live:
            self._live_cursor = live[-1].seq
        backlog = self._select(
            "seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (self._cursor, self._backlog_end, n - len(live)),
        )
        if backlog:
            self._cursor = backlog[-1].seq
        elif len(live) < n:
            # Backlog exhausted: from now on one cursor, in seq order.
            self._cursor, self._live_done = self._live_cursor, True
        return live + backlog

    def release_leases(self) -> None:
        """Forget every lease: the next :meth:`lease` starts again at the oldest row."""
        self._cursor = 0
        self._live_cursor = 0
        self._backlog_end = None
        self._live_done = False

    def settle(self, acked: Iterable[int], rejected: Iterable[Rejection] = ()) -> None:
        """Delete acknowledged rows and dead-letter rejected ones, in one transaction.

        This commit is not fsynced (``synchronous=NORMAL`` for it alone, still
        crash-safe in WAL mode): losing it to a power cut only means those rows
        are sent again, which at-least-once allows, while an fsync per batch of
        PUBACKs would cap the drain rate. The next fsynced commit (a sampling
        round) makes it durable too.
        """
        acked = list(acked)
        rejected = list(rejected)
        if not acked and not rejected:
            return
        now = self.clock.wall_us()
        try:
            with self._unsynced_commit(), self._write() as cur:
                for chunk in _chunks(acked, 500):
                    marks = ",".join("?" * len(chunk))
                    cur.execute(f"DELETE FROM reading WHERE seq IN ({marks})", chunk)
                for rej in rejected:
                    cur.execute(
                        f"INSERT OR REPLACE INTO dead_letter ({_COLUMNS}, code, reason,"
                        f" failed_at_us) SELECT {_COLUMNS}, ?, ?, ? FROM reading WHERE seq = ?",
                        (rej.code, rej.reason, now, rej.seq),
                    )
                    cur.execute("DELETE FROM reading WHERE seq = ?", (rej.seq,))
                if acked:
                    _meta_set(cur, "last_publish_us", str(now))
                self._persist_drops(cur, Counter())
        except DB_ERRORS as exc:
            raise self._translate(exc, "delete acknowledged rows") from exc
        # No log line per rejected row here: the bridge logs them rate-limited, with a summary.

    def ack(self, seqs: Iterable[int]) -> None:
        """Delete acknowledged rows (one transaction)."""
        self.settle(seqs)

    def dead_letter(self, seq: int, code: int, reason: str) -> None:
        """Move one row to ``dead_letter`` with the broker's reason."""
        self.settle((), [Rejection(seq, code, reason)])

    # ------------------------------------------------------------ dead letters

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """Rejected rows, oldest seq first."""
        sql = f"SELECT {_COLUMNS}, code, reason, failed_at_us FROM dead_letter ORDER BY seq"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        rows = self.db.execute_sql(sql, params).fetchall()
        return [DeadLetter(_stored(r[:8]), int(r[8]), str(r[9]), int(r[10])) for r in rows]

    def requeue(self, seqs: Sequence[int] | None) -> int:
        """Move dead letters back into the queue with their original seq (None: all)."""
        where, params = _seq_filter(seqs)
        with self._write() as cur:
            cur.execute(
                f"INSERT OR IGNORE INTO reading ({_COLUMNS}, boot_id, mono_ns)"
                f" SELECT {_COLUMNS}, '', 0 FROM dead_letter {where}",
                params,
            )
            moved = cur.rowcount
            cur.execute(f"DELETE FROM dead_letter {where}", params)
        return moved

    def purge(self, seqs: Sequence[int] | None) -> int:
        """Delete dead letters for good, counted as dropped with reason ``purged``."""
        where, params = _seq_filter(seqs)
        dropped: Counter[str] = Counter()
        with self._write() as cur:
            cur.execute(f"DELETE FROM dead_letter {where}", params)
            dropped["purged"] = cur.rowcount
            self._persist_drops(cur, dropped)
        return dropped["purged"]

    # ------------------------------------------------------------ observation

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
        with self._drops_lock:
            dropped.update(self._pending_drops)
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

    def depth(self) -> int:
        """Number of queued readings."""
        return int(self.db.execute_sql("SELECT COUNT(*) FROM reading").fetchone()[0])

    def high_water_seq(self) -> int:
        """The highest seq ever assigned (never reused, even after deletes)."""
        row = self.db.execute_sql(
            "SELECT seq FROM sqlite_sequence WHERE name = 'reading'"
        ).fetchone()
        return int(row[0]) if row else 0

    def all_seqs(self) -> list[int]:
        """Every queued seq (for tests and salvage checks)."""
        rows = self.db.execute_sql("SELECT seq FROM reading ORDER BY seq").fetchall()
        return [int(r[0]) for r in rows]

    def read_meta(self, key: str) -> str | None:
        """One value of the meta table."""
        row = self.db.execute_sql("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def write_meta(self, key: str, value: str) -> None:
        """Set one value of the meta table (e.g. the daemon heartbeat)."""
        with self._write() as cur:
            _meta_set(cur, key, value)

    def count_drop(self, reason: str, n: int = 1) -> None:
        """Count readings lost before they reached the spool (e.g. sampler overflow)."""
        self._count_pending(reason, n)
        with contextlib.suppress(*DB_ERRORS), self._write() as cur:
            self._persist_drops(cur, Counter())

    def integrity_ok(self) -> bool:
        """``PRAGMA quick_check`` says ok."""
        try:
            rows = self.db.execute_sql("PRAGMA quick_check").fetchall()
        except DB_ERRORS as exc:
            if _is_corrupt(exc):
                return False
            raise
        return [r[0] for r in rows] == ["ok"]

    def close(self) -> None:
        """Close this thread's connection (others close as their threads end)."""
        if not self.db.is_closed():
            self.db.close()

    # --------------------------------------------------------------- helpers

    @contextlib.contextmanager
    def _unsynced_commit(self) -> Iterator[None]:
        """Run the next write of this thread with ``synchronous=NORMAL``, then restore."""
        self.db.execute_sql("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
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
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
            for undo in self._txn.undo:
                undo()
            raise
        finally:
            self._txn.undo = []

    def _select(self, where: str, params: tuple[Any, ...]) -> list[StoredReading]:
        sql = f"SELECT {_COLUMNS} FROM reading WHERE {where}"
        return [_stored(r) for r in self.db.execute_sql(sql, params).fetchall()]

    def _max_seq(self) -> int:
        row = self.db.execute_sql("SELECT MAX(seq) FROM reading").fetchone()
        return int(row[0] or 0)

    def _count_pending(self, reason: str, n: int) -> None:
        with self._drops_lock:
            self._pending_drops[reason] += n
        self._drop_log.note(reason, n, self.path)

    def _persist_drops(self, cur: sqlite3.Cursor, dropped: Counter[str]) -> None:
        """Add ``dropped`` and any pending (not yet persisted) drops to the counters.

        Runs inside :meth:`_write`; if that transaction does not commit (the
        COMMIT itself can hit a full disk), the pending counts become pending again.
        """
        with self._drops_lock:
            pending, self._pending_drops = self._pending_drops, Counter()
        self._txn.undo.append(lambda: self._restore_pending(pending))
        for reason, n in (dropped + pending).items():
            if n:
                cur.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                    " SET value = CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER)",
                    (f"dropped.{reason}", str(n)),
                )

    def _restore_pending(self, pending: Counter[str]) -> None:
        with self._drops_lock:
            self._pending_drops.update(pending)

    def _log_drops(self, dropped: Counter[str]) -> None:
        for reason, n in dropped.items():
            if n:
                self._drop_log.note(reason, n, self.path)

    def _translate(self, exc: BaseException, doing: str) -> SpoolError:
        if _is_corrupt(exc):
            return SpoolCorruptError(self.path, f"SQLite reports corruption: {exc}")
        return SpoolError(self.path, f"{doing} failed: {exc}")

    def correct_clock(self, boot_id: str, wall_us: int, mono_ns: int) -> int:
        """Re-time rows of ``boot_id`` spooled before clock sync; returns how many.

        ``wall_us``/``mono_ns`` are a synchronized wall time and the monotonic
        time taken together; each unsynced row of that boot gets
        ``ts_us = wall_us - (mono_ns - row.mono_ns) // 1000`` and
        ``time_synced = 1``, in one transaction. Rows already sent are gone
        from the queue, so they keep ``time_synced=false`` (docs/sensors.md).
        """
        try:
            with self._write() as cur:
                cur.execute(
                    "UPDATE reading SET ts_us = ? - (? - mono_ns) / 1000, time_synced = 1"
                    " WHERE boot_id = ? AND time_synced = 0",
                    (wall_us, mono_ns, boot_id),
                )
                return int(cur.rowcount)
        except DB_ERRORS as exc:
            raise self._translate(exc, "clock correction") from exc


def _database(path: Path, synchronous: str) -> pw.SqliteDatabase:
    return pw.SqliteDatabase(
        str(path),
        timeout=BUSY_TIMEOUT_S,
        pragmas={"journal_mode": "wal", "synchronous": synchronous.upper()},
        check_same_thread=False,
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


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ---------------------------------------------------------------- opening


def open_spool(
    config: SpoolConfig,
    clock: Clock | None = None,
    integrity_check: bool = False,
) -> Spool:
    """Open (or create) the spool at ``config.path``.

    A file that is not an mqttspool database is refused with
    :class:`NotASpoolError` and never touched. With ``integrity_check`` a
    spool failing ``PRAGMA quick_check`` is quarantined and salvaged.
    """
    clock = clock or SystemClock()
    path = Path(config.path)
    kind = classify_file(path)
    if kind == "not_sqlite":
        raise NotASpoolError(path, "is not an mqttspool spool (not an SQLite database); left as is")
    if kind == "foreign":
        raise NotASpoolError(
            path, "is an SQLite database of another application; left as is. Set spool.path"
        )
    if kind in ("missing", "empty"):
        _create(path)
    try:
        spool = _attach(path, config, clock)
        if integrity_check and not spool.integrity_ok():
            spool.close()
            raise SpoolCorruptError(path, "PRAGMA quick_check failed")
    except SpoolCorruptError as exc:
        logger.error("%s", exc)
        return recover_spool(config, clock)
    return spool


def _create(path: Path) -> None:
    """Create the schema in rollback-journal mode, so the header is final before WAL."""
    db = pw.SqliteDatabase(str(path), timeout=BUSY_TIMEOUT_S)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db.connect()
        with db.atomic("IMMEDIATE"):
            if db.execute_sql("PRAGMA application_id").fetchone()[0] == 0:
                db.execute_sql(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
                with db.bind_ctx(MODELS):
                    db.create_tables(MODELS)
                    MetaRow.insert_many(
                        [
                            ("epoch", secrets.token_hex(4)),
                            ("created_us", str(time.time_ns() // 1000)),
                        ],
                        fields=[MetaRow.key, MetaRow.value],
                    ).execute()
        db.execute_sql("PRAGMA journal_mode = WAL")
    except (OSError, *DB_ERRORS) as exc:
        raise SpoolError(path, f"cannot create: {exc}") from exc
    finally:
        db.close()
    logger.info("created spool %s", path)


def _attach(path: Path, config: SpoolConfig, clock: Clock) -> Spool:
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            row = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if _is_corrupt(exc) or "malformed" in str(exc):
            raise SpoolCorruptError(path, f"cannot read: {exc}") from exc
        raise SpoolError(path, f"cannot open: {exc}") from exc
    if version > SCHEMA_VERSION:
        raise SpoolError(
            path, f"was written by a newer mqttspool (schema {version}); upgrade mqttspool"
        )
    if row is None:
        raise SpoolCorruptError(path, "meta table has no epoch")
    return Spool(path, config, clock, str(row[0]))


# --------------------------------------------------------- quarantine/salvage


@dataclass
class SalvageReport:
    """What :func:`recover_spool` kept and lost."""

    quarantined: Path
    rows: int
    dead_letters: int
    lost: int
    epoch_kept: bool


def recover_spool(config: SpoolConfig, clock: Clock | None = None) -> Spool:
    """Move a corrupt spool aside (``<name>.corrupt-<utc>``) and salvage it into a fresh one.

    The corrupt file is never deleted. Every readable row keeps its seq; the
    epoch is kept when readable so ids stay stable. Seqs that could not be
    read are counted as dropped with reason ``corrupt``.
    """
    clock = clock or SystemClock()
    path = Path(config.path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            shutil.move(src, Path(str(aside) + suffix))
    report = _salvage_into(aside, path)
    logger.error(
        "spool %s was corrupt: moved aside to %s; salvaged %d reading(s) and %d dead letter(s),"
        " %d seq(s) unreadable (counted as dropped, reason corrupt); epoch %s",
        path,
        aside,
        report.rows,
        report.dead_letters,
        report.lost,
        "kept" if report.epoch_kept else "renewed",
    )
    return _attach(path, config, clock)


def _salvage_into(aside: Path, path: Path) -> SalvageReport:
    src = _open_readonly(aside)
    try:
        epoch = _try_one(src, "SELECT value FROM meta WHERE key = 'epoch'")
        hwm = _try_one(src, "SELECT seq FROM sqlite_sequence WHERE name = 'reading'")
        counters = _try_all(src, "SELECT key, value FROM meta WHERE key LIKE 'dropped.%'")
        rows = list(_salvage_rows(src, "reading", _COLUMNS, int(hwm or 0)))
        dead = list(_salvage_rows(src, "dead_letter", f"{_COLUMNS}, code, reason, failed_at_us", 0))
    finally:
        src.close()
    epoch_kept = epoch is not None and hwm is not None
    top = max([int(hwm or 0), *(r[0] for r in rows), *(d[0] for d in dead)])
    lost = _count_lost(rows, dead, top)
    _create(path)
    dst = sqlite3.connect(str(path), isolation_level=None)
    try:
        dst.execute("BEGIN IMMEDIATE")
        if epoch_kept:
            dst.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (str(epoch),))
        dst.executemany(
            f"INSERT INTO reading ({_COLUMNS}, boot_id, mono_ns) VALUES (?,?,?,?,?,?,?,?,'',0)",
            rows,
        )
        dst.executemany(
            f"INSERT INTO dead_letter ({_COLUMNS}, code, reason, failed_at_us)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            dead,
        )
        if epoch_kept:
            dst.execute("DELETE FROM sqlite_sequence WHERE name = 'reading'")
            dst.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('reading', ?)", (top,))
        merged = Counter({str(k): int(v) for k, v in counters})
        merged["dropped.corrupt"] += lost
        for key, value in merged.items():
            if value:
                _meta_set(dst.cursor(), key, str(value))
        _meta_set(dst.cursor(), "salvaged_from", str(aside))
        dst.execute("COMMIT")
    finally:
        dst.close()
    return SalvageReport(aside, len(rows), len(dead), lost, epoch_kept)


def _count_lost(rows: list[tuple[Any, ...]], dead: list[tuple[Any, ...]], top: int) -> int:
    """Seqs between the lowest readable one and the high-water mark that were not readable."""
    seen = {r[0] for r in rows} | {d[0] for d in dead}
    if not seen:
        return 0
    return int(top - min(seen) + 1 - len(seen))


def _open_readonly(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error:
        return sqlite3.connect(str(path), isolation_level=None)


def _try_one(conn: sqlite3.Connection, sql: str) -> Any:
    try:
        row = conn.execute(sql).fetchone()
    except sqlite3.DatabaseError:
        return None
    return None if row is None else row[0]


def _try_all(conn: sqlite3.Connection, sql: str) -> list[Any]:
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.DatabaseError:
        return []


def _salvage_rows(
    conn: sqlite3.Connection, table: str, columns: str, hwm: int
) -> Iterator[tuple[Any, ...]]:
    """Every readable row of ``table`` by seq ranges; damaged ranges are probed row by row."""
    top = max(hwm, int(_try_one(conn, f"SELECT MAX(seq) FROM {table}") or 0))
    cursor = 0
    while cursor < top:
        try:
            chunk = conn.execute(
                f"SELECT {columns} FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?",
                (cursor, SALVAGE_CHUNK),
            ).fetchall()
        except sqlite3.DatabaseError:
            yield from _probe(conn, table, columns, cursor + 1, cursor + SALVAGE_CHUNK)
            cursor += SALVAGE_CHUNK
            continue
        if not chunk:
            return
        yield from (r for r in chunk if _plausible(r))
        cursor = int(chunk[-1][0])


def _probe(
    conn: sqlite3.Connection, table: str, columns: str, lo: int, hi: int
) -> Iterator[tuple[Any, ...]]:
    for seq in range(lo, hi + 1):
        try:
            row = conn.execute(f"SELECT {columns} FROM {table} WHERE seq = ?", (seq,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None and _plausible(row):
            yield row


def _plausible(row: tuple[Any, ...]) -> bool:
    """Reject rows whose bytes were scrambled into the wrong types."""
    seq, device, sensor, metric, value, _unit, ts_us, _synced = row[:8]
    return (
        isinstance(seq, int)
        and all(isinstance(s, str) for s in (device, sensor, metric))
        and isinstance(value, int | float)
        and isinstance(ts_us, int)
    )


def read_stats_json(stats: SpoolStats, device: str, now_us: int) -> dict[str, Any]:
    """The ``status --json`` / retained spool topic document."""
    last = stats.last_publish_us
    return {
        "device": device,
        "epoch": stats.epoch,
        "depth": stats.depth,
        "oldest_age_seconds": _round(stats.oldest_age_seconds(now_us)),
        "dead_letters": stats.dead_letters,
        "dropped": stats.dropped,
        "last_publish": None if last is None else format_ts(last),
        "spool_path": stats.path,
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
