"""The spool's file format: peewee models, pragmas, creating, opening and migrating.

Tables: ``reading`` (the queue; ``seq`` is ``INTEGER PRIMARY KEY
AUTOINCREMENT`` so ids are never reused), ``dead_letter`` (rejected by the
broker, with reason code and text) and ``meta`` (epoch, persisted counters).
The file is marked with :data:`~mqttspool.spool.readonly.APPLICATION_ID` so a
foreign database is recognised and never touched.

Schema versions (``PRAGMA user_version``):

1. the original layout.
2. ``reading.clock_stamped`` (1: the timestamp was taken from this host's
   clock when the reading was spooled, so :meth:`Spool.correct_clock` may
   re-time it; 0: the caller supplied it) and the row counters
   ``count.reading`` / ``count.dead_letter`` in ``meta``, kept in the same
   transaction as every insert and delete, so salvage knows exactly how many
   rows the damaged file held.
3. ``epoch_start`` (``seq``, ``epoch``): the epoch of each seq range, so a
   new epoch (begun after an unclean stop at ``synchronous = "normal"``, see
   :mod:`~mqttspool.spool.epochs`) leaves the old epoch's queued rows their
   ids; migrated with one range from seq 1 in the spool's epoch. ``meta``
   key ``shutdown`` (``clean`` / ``running:<level>``) records how the last
   ``run`` or ``drain`` stopped; a new spool starts ``clean``.
4. ``count.reading_hwm``: appends no longer touch ``meta`` (one page less
   written and fsynced per round). ``count.reading`` is exact as of the
   high-water mark ``count.reading_hwm``; rows appended since got the seqs
   above it, one each (AUTOINCREMENT keeps the mark in ``sqlite_sequence``,
   which every append writes anyway), so the rows queued are
   ``count.reading + hwm - count.reading_hwm`` (:func:`queued_rows`). Every
   other change of the table (delete, dead letter, requeue, drop) folds the
   appended rows into ``count.reading`` and moves the mark, in its transaction.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from pathlib import Path

from mqttspool.errors import NotASpoolError, SpoolCorruptError, SpoolError
from mqttspool.spool.dberrors import DB_ERRORS, is_corrupt, translate
from mqttspool.spool.epochs import CLEAN, SHUTDOWN_KEY
from mqttspool.spool.orm import AutoIncrementField, pw
from mqttspool.spool.readonly import APPLICATION_ID

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 10.0
COLUMNS = "seq, device, sensor, metric, value, unit, ts_us, time_synced"
# New spools use 512-byte pages (files created with another size keep it). At
# synchronous=FULL every round appends the pages it changed to the WAL and
# fsyncs, and the kernel counts each 4 KiB memory page dirtied: a round of ten
# readings changes the last leaves, their parent, sqlite_sequence and page 1
# (the freelist), i.e. ~5 frames of page size + 24 bytes. Measured with
# bench/cost.py at 10 readings/s: 4 KiB pages ~2,300 bytes written per reading,
# 1 KiB ~1,500, 512 ~1,200. Reading and deleting a row costs ~2 us more.
PAGE_SIZE = 512
COUNT_READING = "count.reading"
COUNT_READING_HWM = "count.reading_hwm"
COUNT_DEAD = "count.dead_letter"
HWM_SQL = "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'reading'), 0)"


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
    clock_stamped = pw.BooleanField(default=False, constraints=[pw.SQL("DEFAULT 0")])

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
    """Key/value facts: epoch, ``shutdown``, counters (``dropped.<reason>``, ``count.<table>``)."""

    key = pw.TextField(primary_key=True)
    value = pw.TextField()

    class Meta:
        table_name = "meta"


class EpochStartRow(_Model):
    """Rows with ``seq`` >= this one (up to the next start) belong to ``epoch``."""

    seq = pw.IntegerField(primary_key=True)
    epoch = pw.TextField()

    class Meta:
        table_name = "epoch_start"


MODELS: list[type[_Model]] = [ReadingRow, DeadLetterRow, MetaRow, EpochStartRow]


def queued_rows(count: int, mark: int | None, hwm: int) -> int:
    """The rows in ``reading`` from ``count.reading`` (``count``), ``count.reading_hwm``
    (``mark``; None in a schema 2 file, whose count is exact) and the high-water mark."""
    return count if mark is None else count + hwm - mark


def classify_file(path: Path) -> str:
    """``missing``, ``empty``, ``ours``, ``foreign`` (SQLite of another app) or ``not_sqlite``.

    A ``-journal`` beside a spool (ours or empty) is the hot journal of a
    creation cut short by a crash or power cut: SQLite rolls it back first, so
    the header read is the committed one (an empty file if the schema never
    committed), never a schema whose tables the journal is about to undo.
    """
    kind = _classify_header(path)
    if kind in ("ours", "empty") and Path(f"{path}-journal").exists():
        _roll_back_hot_journal(path)
        kind = _classify_header(path)
    return kind


def _roll_back_hot_journal(path: Path) -> None:
    """Let SQLite roll back a hot rollback journal (any read does; a stale one is removed)."""
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise translate(exc, path, "roll back its interrupted creation (-journal)") from exc
    if not Path(f"{path}-journal").exists():
        logger.warning("spool %s: rolled back the journal of an interrupted creation", path)


def _classify_header(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
    except FileNotFoundError:
        return "missing"
    except IsADirectoryError as exc:
        raise SpoolError(path, "is a directory; set spool.path to a file") from exc
    except OSError as exc:
        raise SpoolError(path, f"cannot read: {exc.strerror}; check its permissions") from exc
    if not header:
        return "empty"
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        return "not_sqlite"
    if int.from_bytes(header[68:72], "big") == APPLICATION_ID:
        return "ours"
    return "foreign"


def refuse_foreign(path: Path, kind: str) -> None:
    """Raise :class:`NotASpoolError` unless ``kind`` (from :func:`classify_file`) is usable."""
    if kind == "not_sqlite":
        raise NotASpoolError(path, "is not an mqttspool spool (not an SQLite database); left as is")
    if kind == "foreign":
        raise NotASpoolError(
            path, "is an SQLite database of another application; left as is. Set spool.path"
        )


def database(path: Path, synchronous: str, wal_pages: int = 1000) -> pw.SqliteDatabase:
    """The peewee database of an existing spool (one SQLite connection per thread).

    ``wal_pages`` is the auto-checkpoint threshold: the spool keeps it below
    its disk reserve, so a checkpoint on a full disk always has room to move
    the WAL into the database file and truncate it.
    """
    return pw.SqliteDatabase(
        str(path),
        timeout=BUSY_TIMEOUT_S,
        pragmas={
            "journal_mode": "wal",
            "synchronous": synchronous.upper(),
            "wal_autocheckpoint": wal_pages,
        },
        check_same_thread=False,
    )


def create(path: Path) -> None:
    """Create the schema in rollback-journal mode, so the header is final before WAL."""
    db = pw.SqliteDatabase(str(path), timeout=BUSY_TIMEOUT_S)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db.connect()
        db.execute_sql(f"PRAGMA page_size = {PAGE_SIZE}")  # takes effect on the empty file only
        with db.atomic("IMMEDIATE"):
            if db.execute_sql("PRAGMA application_id").fetchone()[0] == 0:
                _create_tables(db)
        db.execute_sql("PRAGMA journal_mode = WAL")
    except (OSError, *DB_ERRORS) as exc:
        raise SpoolError(
            path, f"cannot create: {exc}; check that {path.parent} is writable"
        ) from exc
    finally:
        db.close()
    logger.info("created spool %s", path)


def _create_tables(db: pw.SqliteDatabase) -> None:
    db.execute_sql(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
    epoch = secrets.token_hex(4)
    with db.bind_ctx(MODELS):
        db.create_tables(MODELS)
        EpochStartRow.insert(seq=1, epoch=epoch).execute()
        MetaRow.insert_many(
            [
                ("epoch", epoch),
                (SHUTDOWN_KEY, CLEAN),
                ("created_us", str(time.time_ns() // 1000)),
                (COUNT_READING, "0"),
                (COUNT_READING_HWM, "0"),
                (COUNT_DEAD, "0"),
            ],
            fields=[MetaRow.key, MetaRow.value],
        ).execute()


def page_size(path: Path) -> int:
    """The page size of the spool at ``path`` (``PRAGMA page_size``): :data:`PAGE_SIZE`
    for new spools; older files keep the size they were created with."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            return int(conn.execute("PRAGMA page_size").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise _open_error(exc, path) from exc


def _open_error(exc: sqlite3.DatabaseError, path: Path) -> SpoolError:
    if is_corrupt(exc):
        return SpoolCorruptError(path, f"cannot read: {exc}")
    return translate(exc, path, "open")


def attach(path: Path, migrate: bool) -> str:
    """Check the existing spool at ``path`` (migrating it if ``migrate``); returns its epoch."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if migrate and version < SCHEMA_VERSION:
                migrate_schema(conn, path)
            row = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise _open_error(exc, path) from exc
    if version > SCHEMA_VERSION:
        raise SpoolError(
            path, f"was written by a newer mqttspool (schema {version}); upgrade mqttspool"
        )
    if row is None:
        raise SpoolCorruptError(path, "meta table has no epoch")
    return str(row[0])


def migrate_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Bring a spool of an older schema version up to :data:`SCHEMA_VERSION` in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < 2:
            # Old rows keep their timestamps: nothing proves they were stamped locally.
            conn.execute("ALTER TABLE reading ADD COLUMN clock_stamped INTEGER NOT NULL DEFAULT 0")
            for key, table in ((COUNT_READING, "reading"), (COUNT_DEAD, "dead_letter")):
                conn.execute(
                    f"INSERT OR REPLACE INTO meta (key, value) SELECT ?, COUNT(*) FROM {table}",
                    (key,),
                )
        if version < 3:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS epoch_start"
                " (seq INTEGER NOT NULL PRIMARY KEY, epoch TEXT NOT NULL)"
            )
            conn.execute(
                "INSERT OR IGNORE INTO epoch_start SELECT 1, value FROM meta WHERE key = 'epoch'"
            )
        if version < 4:
            # count.reading is exact here (schema 2 counted every insert): mark it so.
            conn.execute(
                f"INSERT OR REPLACE INTO meta (key, value) VALUES (?, ({HWM_SQL}))",
                (COUNT_READING_HWM,),
            )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    logger.info("spool %s: migrated schema %d -> %d", path, version, SCHEMA_VERSION)
