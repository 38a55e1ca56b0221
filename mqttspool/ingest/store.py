"""Where ``mqttspool ingest`` writes: one small storage interface, two backends.

:class:`SqliteStore` (default; one file, no setup) and :class:`PostgresStore`
(``postgresql://...``; psycopg 3 from the ``postgres`` extra, imported only
when used) share every SQL statement (:class:`SqlStore`): readings are
unique by ``id`` and inserted with ``ON CONFLICT (id) DO NOTHING RETURNING
id``, so the rows that come back are the new ones and the rest are
duplicates. One :meth:`Store.write` is one transaction; the consumer
acknowledges the batch to the broker only after it returns.

The completeness state lives in the same database: the readings themselves
(gaps are computed from their seqs), duplicate counts per ``(device,
epoch)`` and the latest spool snapshot per epoch.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from mqttspool.errors import ConfigError, MqttspoolError
from mqttspool.wire.gaps import between
from mqttspool.wire.snapshot import Snapshot

INSTALL_HINT = "pip install 'mqttspool[postgres]'"
QUARANTINE_PAYLOAD_BYTES = 1024  # the first bytes of a quarantined message are kept
QUARANTINE_TEXT_CHARS = 512  # topic and reason, cut to this length
ROWS_PER_STATEMENT = 500  # 11 parameters each: well inside SQLite's 32766 variables
SQLITE_BUSY_TIMEOUT_MS = 30_000  # several ingest processes may share one SQLite file


class StoreError(MqttspoolError):
    """The ingest database failed (unreachable, full, locked); names the database.

    Waiting may heal it: ``ingest`` keeps the messages unacknowledged and retries.
    """

    def __init__(self, db: str, message: str) -> None:
        super().__init__(f"ingest database {db}: {message}")
        self.db = db
        self.message = message


class StoreRefusedError(StoreError):
    """The database refused what was written (a value out of range, NUL in text...).

    Retrying the same data cannot help: ``ingest`` quarantines the message that
    caused it and goes on.
    """


@dataclass(frozen=True, slots=True)
class IngestRow:
    """One reading as stored by ``ingest`` (the per-reading payload, flattened)."""

    id: str
    device: str
    epoch: str
    seq: int
    sensor: str
    metric: str
    value: float
    unit: str | None
    ts_us: int
    time_synced: bool
    replay: bool


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A message that is not a reading ingest can decode, kept with the reason."""

    topic: str
    reason: str
    payload: bytes


@dataclass
class WriteBatch:
    """Everything one transaction writes."""

    rows: list[IngestRow] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    undecodable: list[Undecodable] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StreamCounts:
    """Per ``(device, epoch)``: unique readings stored, duplicates seen, seq range."""

    device: str
    epoch: str
    received: int
    duplicates: int
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class StoredState:
    """The completeness inputs read back from the database."""

    streams: list[StreamCounts]
    gaps: dict[str, list[tuple[int, int]]]  # epoch -> missing (first, last) seq ranges
    snapshots: dict[str, Snapshot]  # epoch -> latest snapshot
    undecodable: int  # messages kept in ingest_quarantine (bounded)


class Store(Protocol):
    """The storage contract both backends meet (tests/ingest/test_store.py)."""

    name: str

    def write(self, batch: WriteBatch) -> int:
        """Store ``batch`` in one transaction; returns how many rows were new."""
        ...

    def state(self) -> StoredState:
        """Counts, gaps and snapshots for the completeness report."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


_COLUMNS = "id, device, epoch, seq, sensor, metric, value, unit, ts_us, time_synced, replay"
_STREAMS_SQL = (
    "SELECT r.device, r.epoch, COUNT(*), MIN(r.seq), MAX(r.seq),"
    " COALESCE(MAX(s.duplicates), 0) FROM ingest_reading r LEFT JOIN ingest_stream s"
    " ON s.device = r.device AND s.epoch = r.epoch{where} GROUP BY r.device, r.epoch"
    " ORDER BY r.epoch, r.device"
)
# Neighbouring seqs of an epoch that are not adjacent; mqttspool.wire.gaps.between
# turns each pair into the missing range.
_GAPS_SQL = (
    "SELECT epoch, seq, next_seq FROM (SELECT epoch, seq,"
    " LEAD(seq) OVER (PARTITION BY epoch ORDER BY seq) AS next_seq FROM ingest_reading{where}) g"
    " WHERE next_seq - seq > 1 ORDER BY epoch, seq"
)
_SNAPSHOTS_SQL = "SELECT device, epoch, dropped_json, dead_letters FROM ingest_snapshot"
_DUPLICATES_SQL = (
    "INSERT INTO ingest_stream (device, epoch, duplicates) VALUES (?, ?, ?)"
    " ON CONFLICT (device, epoch) DO UPDATE"
    " SET duplicates = ingest_stream.duplicates + excluded.duplicates"
)
# The first device to report an epoch owns it: another device's snapshot cannot
# overwrite (and so "explain") the counters of an epoch that is not its own.
_SNAPSHOT_SQL = (
    "INSERT INTO ingest_snapshot (epoch, device, dropped_json, dead_letters, received_us)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (epoch) DO UPDATE SET"
    " dropped_json = excluded.dropped_json, dead_letters = excluded.dead_letters,"
    " received_us = excluded.received_us WHERE ingest_snapshot.device = excluded.device"
)
_QUARANTINE_SQL = (
    "INSERT INTO ingest_quarantine (topic, reason, size, payload, received_us)"
    " VALUES (?, ?, ?, ?, ?)"
)
_QUARANTINE_PRUNE_SQL = (
    "DELETE FROM ingest_quarantine WHERE id <= (SELECT MAX(id) FROM ingest_quarantine) - ?"
)


def schema(blob_type: str, serial_key: str) -> list[str]:
    """The DDL (idempotent), with the dialect's binary and auto-increment key types."""
    return [
        "CREATE TABLE IF NOT EXISTS ingest_reading (id TEXT NOT NULL, device TEXT NOT NULL,"
        " epoch TEXT NOT NULL, seq BIGINT NOT NULL, sensor TEXT NOT NULL, metric TEXT NOT NULL,"
        " value DOUBLE PRECISION NOT NULL, unit TEXT, ts_us BIGINT NOT NULL,"
        " time_synced BOOLEAN NOT NULL, replay BOOLEAN NOT NULL, UNIQUE (id))",
        "CREATE INDEX IF NOT EXISTS ingest_reading_epoch_seq ON ingest_reading (epoch, seq)",
        "CREATE TABLE IF NOT EXISTS ingest_stream (device TEXT NOT NULL, epoch TEXT NOT NULL,"
        " duplicates BIGINT NOT NULL, PRIMARY KEY (device, epoch))",
        "CREATE TABLE IF NOT EXISTS ingest_snapshot (epoch TEXT PRIMARY KEY,"
        " device TEXT NOT NULL, dropped_json TEXT NOT NULL, dead_letters BIGINT NOT NULL,"
        " received_us BIGINT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS ingest_quarantine (id {serial_key}, topic TEXT NOT NULL,"
        " reason TEXT NOT NULL, size BIGINT NOT NULL,"
        f" payload {blob_type} NOT NULL, received_us BIGINT NOT NULL)",
    ]


def unique_rows(rows: Sequence[IngestRow]) -> tuple[list[IngestRow], dict[tuple[str, str], int]]:
    """``rows`` without repeated ids, and the repeats per ``(device, epoch)``."""
    seen: dict[str, IngestRow] = {}
    repeats: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.id in seen:
            key = (row.device, row.epoch)
            repeats[key] = repeats.get(key, 0) + 1
        else:
            seen[row.id] = row
    return list(seen.values()), repeats


class SqlStore:
    """The SQL shared by both backends; a subclass supplies the DB-API connection."""

    name = "?"
    placeholder = "?"
    errors: tuple[type[BaseException], ...] = ()
    unavailable: tuple[type[BaseException], ...] = ()  # errors that waiting may heal
    quarantine_max = 1000

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._cache: dict[str, tuple[list[StreamCounts], list[tuple[int, int]]]] | None = None
        self._dirty: set[str] = set()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except self.unavailable as exc:
            raise StoreError(self.name, f"{what} failed: {exc}") from exc
        except self._refusals() as exc:
            raise StoreRefusedError(self.name, f"{what} refused: {exc}") from exc

    def _refusals(self) -> tuple[type[BaseException], ...]:
        # The driver's other errors, and what Python raises binding a value the
        # column cannot hold (SQLite: OverflowError for an int beyond 64 bits).
        return (*self.errors, OverflowError, ValueError, TypeError)

    def _ensure_open(self) -> None:
        """Reconnect if the connection was lost (PostgreSQL); nothing for SQLite."""

    def write(self, batch: WriteBatch) -> int:
        """Insert new readings, count duplicates, keep snapshots; one transaction."""
        rows, repeats = unique_rows(batch.rows)
        now_us = time.time_ns() // 1000
        with self._translated("write"):
            self._ensure_open()
            cur = self.conn.cursor()
            try:
                new_ids = self._insert_rows(cur, rows)
                for row in rows:
                    if row.id not in new_ids:
                        key = (row.device, row.epoch)
                        repeats[key] = repeats.get(key, 0) + 1
                streams = {(r.device, r.epoch) for r in rows} | set(repeats)
                cur.executemany(
                    self._sql(_DUPLICATES_SQL), [(*k, repeats.get(k, 0)) for k in sorted(streams)]
                )
                self._write_extras(cur, batch, now_us)
                self.conn.commit()
            except BaseException:
                with contextlib.suppress(*self.errors):
                    self.conn.rollback()
                raise
        self._dirty.update(r.epoch for r in rows)
        return len(new_ids)

    def _insert_rows(self, cur: Any, rows: list[IngestRow]) -> set[str]:
        new_ids: set[str] = set()
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
            params = [v for r in chunk for v in _row_values(r)]
            cur.execute(
                self._sql(
                    f"INSERT INTO ingest_reading ({_COLUMNS}) VALUES {values}"
                    " ON CONFLICT (id) DO NOTHING RETURNING id"
                ),
                params,
            )
            new_ids.update(str(found[0]) for found in cur.fetchall())
        return new_ids

    def _write_extras(self, cur: Any, batch: WriteBatch, now_us: int) -> None:
        for snap in batch.snapshots:
            dropped = json.dumps(snap.dropped, sort_keys=True)
            params = (snap.epoch, snap.device, dropped, snap.dead_letters, now_us)
            cur.execute(self._sql(_SNAPSHOT_SQL), params)
        for bad in batch.undecodable:
            kept = (
                _printable(bad.topic),
                _printable(bad.reason),
                len(bad.payload),
                bad.payload[:QUARANTINE_PAYLOAD_BYTES],
                now_us,
            )
            cur.execute(self._sql(_QUARANTINE_SQL), kept)
        if batch.undecodable:
            cur.execute(self._sql(_QUARANTINE_PRUNE_SQL), (self.quarantine_max,))

    def state(self) -> StoredState:
        """Counts per (device, epoch), gaps per epoch, the latest snapshot per epoch.

        The first call reads every epoch; later calls re-read only the epochs this
        store wrote since (an index range each), so a status refresh does not
        rescan the readings table.
        """
        with self._translated("reading the completeness state"):
            self._ensure_open()
            cur = self.conn.cursor()
            epochs = None if self._cache is None else sorted(self._dirty)
            self._dirty.clear()
            fresh = self._read_epochs(cur, epochs)
            self._cache = fresh if self._cache is None else {**self._cache, **fresh}
            cur.execute(_SNAPSHOTS_SQL)
            snapshots = {
                str(e): Snapshot(str(d), str(e), json.loads(dropped), int(dead))
                for d, e, dropped, dead in cur.fetchall()
            }
            cur.execute("SELECT COUNT(*) FROM ingest_quarantine")
            undecodable = int(cur.fetchone()[0])
            self.conn.rollback()  # end the read transaction (PostgreSQL opened one)
        streams = sorted(
            (s for st, _ in self._cache.values() for s in st), key=lambda s: (s.epoch, s.device)
        )
        gaps = {e: g for e, (_, g) in self._cache.items() if g}
        return StoredState(streams, gaps, snapshots, undecodable)

    def _read_epochs(
        self, cur: Any, epochs: list[str] | None
    ) -> dict[str, tuple[list[StreamCounts], list[tuple[int, int]]]]:
        """Streams and gaps of ``epochs`` (None: all of them)."""
        if epochs == []:
            return {}
        where, params = "", tuple(epochs or ())
        if epochs is not None:
            where = f" WHERE epoch IN ({', '.join('?' * len(epochs))})"
        out: dict[str, tuple[list[StreamCounts], list[tuple[int, int]]]] = {}
        cur.execute(self._sql(_STREAMS_SQL.format(where=where.replace("epoch", "r.epoch"))), params)
        for d, e, n, lo, hi, dup in cur.fetchall():
            entry = out.setdefault(str(e), ([], []))
            entry[0].append(StreamCounts(str(d), str(e), int(n), int(dup), int(lo), int(hi)))
        cur.execute(self._sql(_GAPS_SQL.format(where=where)), params)
        for epoch, seq, next_seq in cur.fetchall():
            if (gap := between(int(seq), int(next_seq))) is not None:
                out.setdefault(str(epoch), ([], []))[1].append(gap)
        return out

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(*self.errors):
            self.conn.close()


def _printable(text: str) -> str:
    """``text`` cut short, control characters (NUL: PostgreSQL refuses it) as ``?``."""
    cut = text[:QUARANTINE_TEXT_CHARS]
    return "".join("?" if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else c for c in cut)


def _row_values(r: IngestRow) -> tuple[object, ...]:
    return (
        r.id,
        r.device,
        r.epoch,
        r.seq,
        r.sensor,
        r.metric,
        r.value,
        r.unit,
        r.ts_us,
        r.time_synced,
        r.replay,
    )


class SqliteStore(SqlStore):
    """The default backend: a SQLite file in WAL mode (several processes may share it)."""

    placeholder = "?"
    errors = (sqlite3.Error,)
    unavailable = (sqlite3.OperationalError,)  # locked, disk full, I/O error

    def __init__(self, path: str) -> None:
        self.name = path
        try:
            conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            for ddl in schema("BLOB", "INTEGER PRIMARY KEY"):
                conn.execute(ddl)
            conn.commit()
        except sqlite3.Error as exc:
            raise StoreError(path, f"cannot open: {exc}") from exc
        super().__init__(conn)


class PostgresStore(SqlStore):
    """PostgreSQL through psycopg 3 (``pip install 'mqttspool[postgres]'``)."""

    placeholder = "%s"

    def __init__(self, url: str) -> None:
        self.name = redact_url(url)
        self._url = url
        self._psycopg = psycopg = _import_psycopg()
        self.errors = (psycopg.Error,)
        self.unavailable = (psycopg.OperationalError, psycopg.InterfaceError)
        super().__init__(self._connect())

    def _connect(self) -> Any:
        try:
            conn = self._psycopg.connect(self._url, connect_timeout=10)
            with conn.cursor() as cur:
                for ddl in schema("BYTEA", "BIGSERIAL PRIMARY KEY"):
                    cur.execute(ddl)
            conn.commit()
        except self._psycopg.Error as exc:
            raise StoreError(self.name, f"cannot connect: {exc}") from exc
        return conn

    def _ensure_open(self) -> None:
        """A lost connection (server restart, network) is replaced by a new one."""
        if self.conn.closed or self.conn.broken:
            with contextlib.suppress(*self.errors):
                self.conn.close()
            self.conn = self._connect()


def _import_psycopg() -> Any:
    try:
        import psycopg  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise ConfigError(
            "ingest.db",
            [("ingest.db", f"PostgreSQL needs psycopg, which is not installed: {INSTALL_HINT}")],
        ) from exc
    return psycopg


def redact_url(url: str) -> str:
    """``url`` without its password (for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:********@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_db(db: str) -> None:
    """Check ``ingest.db`` without creating anything; raises :class:`ConfigError`.

    A PostgreSQL URL needs psycopg (the ``postgres`` extra) and a host and a
    database name; a SQLite path needs an existing directory.
    """
    if db.startswith(("postgresql://", "postgres://")):
        _import_psycopg()
        parts = urlsplit(db)
        if not parts.path.strip("/") and "dbname=" not in parts.query:
            problem = f"{redact_url(db)} names no database (postgresql://user@host/dbname)"
            raise ConfigError("ingest.db", [("ingest.db", problem)])
        return
    if "://" in db and not db.startswith("sqlite:///"):
        problem = f"{redact_url(db)}: use a SQLite path or postgresql://user@host/dbname"
        raise ConfigError("ingest.db", [("ingest.db", problem)])
    parent = Path(db.removeprefix("sqlite:///")).expanduser().parent
    if not parent.is_dir():
        problem = f"directory {parent} does not exist (ingest creates the file, not directories)"
        raise ConfigError("ingest.db", [("ingest.db", problem)])


def open_store(db: str, quarantine_max: int = SqlStore.quarantine_max) -> SqlStore:
    """The backend for ``db``: a ``postgresql://`` URL, or a SQLite file path."""
    store: SqlStore
    if db.startswith(("postgresql://", "postgres://")):
        store = PostgresStore(db)
    else:
        store = SqliteStore(db.removeprefix("sqlite:///"))
    store.quarantine_max = quarantine_max
    return store
