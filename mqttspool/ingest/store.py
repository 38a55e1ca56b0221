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
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from mqttspool.errors import ConfigError, MqttspoolError
from mqttspool.wire.snapshot import Snapshot

INSTALL_HINT = "pip install 'mqttspool[postgres]'"
ROWS_PER_STATEMENT = 500  # 11 parameters each: well inside SQLite's 32766 variables
SQLITE_BUSY_TIMEOUT_MS = 30_000  # several ingest processes may share one SQLite file


class StoreError(MqttspoolError):
    """The ingest database failed (unreachable, full, refused); names the database."""

    def __init__(self, db: str, message: str) -> None:
        super().__init__(f"ingest database {db}: {message}")
        self.db = db


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
    undecodable: int  # messages kept in ingest_undecodable


class Store(Protocol):
    """The storage contract both backends meet (tests/test_ingest_store.py)."""

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
    " ON s.device = r.device AND s.epoch = r.epoch GROUP BY r.device, r.epoch"
    " ORDER BY r.epoch, r.device"
)
_GAPS_SQL = (
    "SELECT epoch, seq + 1, next_seq - 1 FROM (SELECT epoch, seq,"
    " LEAD(seq) OVER (PARTITION BY epoch ORDER BY seq) AS next_seq FROM ingest_reading) g"
    " WHERE next_seq - seq > 1 ORDER BY epoch, seq"
)
_SNAPSHOTS_SQL = "SELECT device, epoch, dropped_json, dead_letters FROM ingest_snapshot"
_DUPLICATES_SQL = (
    "INSERT INTO ingest_stream (device, epoch, duplicates) VALUES (?, ?, ?)"
    " ON CONFLICT (device, epoch) DO UPDATE"
    " SET duplicates = ingest_stream.duplicates + excluded.duplicates"
)
_SNAPSHOT_SQL = (
    "INSERT INTO ingest_snapshot (epoch, device, dropped_json, dead_letters, received_us)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (epoch) DO UPDATE SET device = excluded.device,"
    " dropped_json = excluded.dropped_json, dead_letters = excluded.dead_letters,"
    " received_us = excluded.received_us"
)
_UNDECODABLE_SQL = (
    "INSERT INTO ingest_undecodable (topic, reason, payload, received_us) VALUES (?, ?, ?, ?)"
)


def schema(blob_type: str) -> list[str]:
    """The DDL (idempotent), with the dialect's binary column type."""
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
        "CREATE TABLE IF NOT EXISTS ingest_undecodable (topic TEXT NOT NULL,"
        f" reason TEXT NOT NULL, payload {blob_type} NOT NULL, received_us BIGINT NOT NULL)",
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

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except self.errors as exc:
            raise StoreError(self.name, f"{what} failed: {exc}") from exc

    def write(self, batch: WriteBatch) -> int:
        """Insert new readings, count duplicates, keep snapshots; one transaction."""
        rows, repeats = unique_rows(batch.rows)
        now_us = time.time_ns() // 1000
        with self._translated("write"):
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
                self.conn.rollback()
                raise
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
            cur.execute(self._sql(_UNDECODABLE_SQL), (bad.topic, bad.reason, bad.payload, now_us))

    def state(self) -> StoredState:
        """Counts per (device, epoch), gaps per epoch, the latest snapshot per epoch."""
        with self._translated("reading the completeness state"):
            cur = self.conn.cursor()
            cur.execute(_STREAMS_SQL)
            streams = [
                StreamCounts(str(d), str(e), int(n), int(dup), int(lo), int(hi))
                for d, e, n, lo, hi, dup in cur.fetchall()
            ]
            gaps: dict[str, list[tuple[int, int]]] = {}
            cur.execute(_GAPS_SQL)
            for epoch, first, last in cur.fetchall():
                gaps.setdefault(str(epoch), []).append((int(first), int(last)))
            cur.execute(_SNAPSHOTS_SQL)
            snapshots = {
                str(e): Snapshot(str(d), str(e), json.loads(dropped), int(dead))
                for d, e, dropped, dead in cur.fetchall()
            }
            cur.execute("SELECT COUNT(*) FROM ingest_undecodable")
            undecodable = int(cur.fetchone()[0])
            self.conn.rollback()  # end the read transaction (PostgreSQL opened one)
        return StoredState(streams, gaps, snapshots, undecodable)

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(*self.errors):
            self.conn.close()


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

    def __init__(self, path: str) -> None:
        self.name = path
        try:
            conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            for ddl in schema("BLOB"):
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
        psycopg = _import_psycopg()
        self.errors = (psycopg.Error,)
        try:
            conn = psycopg.connect(url, connect_timeout=10)
            with conn.cursor() as cur:
                for ddl in schema("BYTEA"):
                    cur.execute(ddl)
            conn.commit()
        except psycopg.Error as exc:
            raise StoreError(self.name, f"cannot connect: {exc}") from exc
        super().__init__(conn)


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


def open_store(db: str) -> SqlStore:
    """The backend for ``db``: a ``postgresql://`` URL, or a SQLite file path."""
    if db.startswith(("postgresql://", "postgres://")):
        return PostgresStore(db)
    return SqliteStore(db.removeprefix("sqlite:///"))
