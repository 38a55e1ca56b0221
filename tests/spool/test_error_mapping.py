"""Every public Spool method maps database errors to mqttspool's own exceptions."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from fakes.clock import FakeClock

from mqttspool.config import SpoolConfig
from mqttspool.errors import SpoolCorruptError, SpoolError, SpoolGoneError
from mqttspool.reading import Reading
from mqttspool.spool import Rejection, Spool, open_spool

READING = Reading(
    device="edge-01",
    sensor="sim",
    metric="temperature",
    value=1.5,
    ts=datetime(2026, 11, 26, tzinfo=UTC),
    time_synced=True,
)

# Every public method of Spool, with a call that makes it touch the database.
CALLS: dict[str, Callable[[Spool], Any]] = {
    "append": lambda s: s.append([READING]),
    "expire": lambda s: s.expire(),
    "rows_after": lambda s: s.rows_after(0, 10),
    "newest_seq": lambda s: s.newest_seq(),
    "data_version": lambda s: s.data_version(),
    "settle": lambda s: s.settle([1], [Rejection(2, 0x87, "not authorized")]),
    "dead_letters": lambda s: s.dead_letters(),
    "requeue": lambda s: s.requeue(None),
    "purge": lambda s: s.purge([1]),
    "stats": lambda s: s.stats(),
    "depth": lambda s: s.depth(),
    "count_drop": lambda s: s.count_drop("sampler_overflow", 2),
    "integrity_ok": lambda s: s.integrity_ok(),
    "correct_clock": lambda s: s.correct_clock("boot", 1, 1),
    "check_file": lambda s: _unlink_then_check(s),
    "close": lambda s: s.close(),
    "epoch_of": lambda s: s.epoch_of(1),
    "begin_writing": lambda s: s.begin_writing(),
    "mark_clean": lambda s: s.mark_clean(),
    "sync_deletes": lambda s: _sync_unsynced(s),
}


def _sync_unsynced(s: Spool) -> None:
    s.durability.count_unsynced(1)  # as if a settle had committed unsynced
    s.sync_deletes()


def _unlink_then_check(s: Spool) -> None:
    s.path.unlink()
    s.check_file()


# Methods that may legitimately swallow the error: count_drop keeps the count
# pending (persisted by the next commit), integrity_ok answers False on corruption.
SWALLOWS = {"count_drop"}


def _error(kind: str) -> sqlite3.DatabaseError:
    message, code = {
        "corrupt": ("database disk image is malformed", sqlite3.SQLITE_CORRUPT),
        "notadb": ("file is not a database", sqlite3.SQLITE_NOTADB),
        "locked": ("database is locked", sqlite3.SQLITE_BUSY),
        "ioerr": ("disk I/O error", sqlite3.SQLITE_IOERR),
    }[kind]
    exc = sqlite3.DatabaseError(message)
    exc.sqlite_errorcode = code
    return exc


class _FailingCursor:
    def __init__(self, exc: sqlite3.DatabaseError) -> None:
        self.exc = exc
        self.rowcount = 0
        self.lastrowid = 0

    def execute(self, *args: Any) -> Any:
        raise self.exc


class _FailingConnection:
    in_transaction = False

    def __init__(self, exc: sqlite3.DatabaseError) -> None:
        self.exc = exc

    def cursor(self) -> _FailingCursor:
        return _FailingCursor(self.exc)


class _FailingDatabase:
    """Stands in for the peewee database: every statement fails with ``exc``."""

    def __init__(self, exc: sqlite3.DatabaseError) -> None:
        self.exc = exc

    def execute_sql(self, *args: Any) -> Any:
        raise pw.DatabaseError(self.exc) from self.exc  # as peewee wraps it

    def connection(self) -> _FailingConnection:
        return _FailingConnection(self.exc)

    def is_closed(self) -> bool:
        return False

    def close(self) -> None:
        raise pw.DatabaseError(self.exc) from self.exc


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    cfg = SpoolConfig(path=str(tmp_path / "spool.db"), min_free_bytes=0, max_age=3600)
    s = open_spool(cfg, FakeClock())
    real = s.db
    yield s
    real.close()


def test_the_call_table_covers_every_public_method() -> None:
    public = {n for n in dir(Spool) if not n.startswith("_") and callable(getattr(Spool, n))}
    assert public == set(CALLS), "a public Spool method without an error-mapping test"


@pytest.mark.parametrize("kind", ["corrupt", "notadb", "locked", "ioerr"])
@pytest.mark.parametrize("method", sorted(CALLS))
def test_every_public_method_raises_only_spool_errors(spool: Spool, method: str, kind: str) -> None:
    spool.db = _FailingDatabase(_error(kind))
    try:
        result = CALLS[method](spool)
    except SpoolError as exc:
        assert exc.path == spool.path
        assert str(spool.path) in str(exc)
        if method == "check_file":
            assert isinstance(exc, SpoolGoneError)
        elif kind in ("corrupt", "notadb"):
            assert isinstance(exc, SpoolCorruptError), f"{method}: {exc!r}"
            assert "salvage" in str(exc)
        else:
            assert not isinstance(exc, SpoolCorruptError)
        return
    # Only these may return: count_drop keeps the drop pending, integrity_ok
    # reports corruption as False.
    if method == "integrity_ok":
        assert kind in ("corrupt", "notadb") and result is False
    else:
        assert method in SWALLOWS, f"{method} swallowed a {kind} error"


def test_count_drop_keeps_the_count_when_the_database_fails(tmp_path: Path) -> None:
    cfg = SpoolConfig(path=str(tmp_path / "spool.db"), min_free_bytes=0)
    s = open_spool(cfg, FakeClock())
    real = s.db
    s.db = _FailingDatabase(_error("locked"))
    s.count_drop("sampler_overflow", 2)
    s.db = real
    s.count_drop("sampler_overflow", 1)  # the next commit carries the pending count
    s.close()
    again = open_spool(cfg, FakeClock())
    try:
        assert again.stats().dropped == {"sampler_overflow": 3}
    finally:
        again.close()


def _corrupt_a_reading_page(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # The oldest rows' leaf: stats reads the oldest row (the counts come from meta).
        (page,) = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'reading' AND pagetype = 'leaf'"
            " ORDER BY path LIMIT 1"
        ).fetchone()
        size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    with path.open("r+b") as fh:
        fh.seek((int(page) - 1) * size)
        fh.write(b"\xa5" * size)


def test_corruption_found_by_stats_is_a_spool_corrupt_error(tmp_path: Path) -> None:
    """The bridge's snapshot calls stats: corruption there must trigger salvage."""
    cfg = SpoolConfig(path=str(tmp_path / "spool.db"), min_free_bytes=0)
    s = open_spool(cfg, FakeClock())
    for _ in range(40):
        s.append([READING] * 20)
    s.close()
    _corrupt_a_reading_page(tmp_path / "spool.db")
    s = open_spool(cfg, FakeClock())
    try:
        with pytest.raises(SpoolCorruptError) as info:
            s.stats()
        assert info.value.path == tmp_path / "spool.db"
        with pytest.raises(SpoolCorruptError):
            s.rows_after(0, 10)
    finally:
        s.close()


def test_corruption_found_by_the_bridge_snapshot_reaches_the_supervisor(tmp_path: Path) -> None:
    """Bridge.snapshot (the retained spool document) raises SpoolCorruptError, not a raw error."""
    from bridge.test_step import make_bridge  # noqa: PLC0415 - the bridge unit-test helpers

    clock = FakeClock()
    bridge, _pub, spool = make_bridge(tmp_path, clock)
    for _ in range(40):
        spool.append([READING] * 20)
    spool.close()
    _corrupt_a_reading_page(tmp_path / "spool.db")
    try:
        with pytest.raises(SpoolCorruptError):
            bridge.snapshot()
    finally:
        spool.close()
