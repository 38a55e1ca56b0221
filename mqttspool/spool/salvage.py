"""Quarantine and salvage: a corrupt spool is moved aside and its readable rows copied out.

The corrupt file is never deleted. Every readable row keeps its seq; the
epoch is kept when it and the high-water mark are readable, so message ids
stay stable. Loss is counted exactly from the row counters the store keeps in
``meta`` (``count.dead_letter``, and ``count.reading`` as of the high-water
mark ``count.reading_hwm``: with the seqs appended above it, see
:func:`~mqttspool.spool.schema.queued_rows`): lost = rows the file held minus
rows salvage could read. Only when those counters are unreadable too is the loss
estimated from the gaps between readable seqs (logged as an estimate).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mqttspool.errors import SpoolError
from mqttspool.spool import schema
from mqttspool.spool.epochs import SHUTDOWN_KEY

logger = logging.getLogger(__name__)

SALVAGE_CHUNK = 500
_COLUMNS = schema.COLUMNS
_DEAD_COLUMNS = f"{_COLUMNS}, code, reason, failed_at_us"


_lost_lock = threading.Lock()
_lost_to_corruption: Counter[str] = Counter()


def count_lost_to_corruption(path: Path, n: int) -> None:
    """Note ``n`` readings a caller could not store because the spool at ``path`` was corrupt.

    The sampler calls this when a round fails with SpoolCorruptError; the next
    salvage of ``path`` in this process counts them as dropped, reason ``corrupt``.
    """
    with _lost_lock:
        _lost_to_corruption[os.path.abspath(path)] += n


def _take_lost_to_corruption(path: Path) -> int:
    with _lost_lock:
        return _lost_to_corruption.pop(os.path.abspath(path), 0)


@dataclass
class SalvageReport:
    """What :func:`~mqttspool.spool.recover_spool` kept and lost."""

    quarantined: Path
    rows: int
    dead_letters: int
    lost: int
    epoch_kept: bool
    exact: bool = True


@dataclass
class _Salvaged:
    """Everything readable in a damaged spool."""

    epoch: Any
    hwm: Any
    counters: Counter[str]
    rows: list[tuple[Any, ...]]
    dead: list[tuple[Any, ...]]
    starts: list[tuple[Any, ...]]  # epoch_start rows (the table exists since schema 3)
    shutdown: Any  # meta.shutdown: how the last run/drain stopped


def aside_name(path: Path) -> Path:
    """A free ``<name>.corrupt-<utc>`` beside ``path`` (``-2``, ``-3``... within one second)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(Path(f"{aside}{suffix}").exists() for suffix in ("", "-wal", "-shm")):
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    return aside


def intent_path(path: Path) -> Path:
    """``<name>.salvage``: names the quarantined file while its salvage is unfinished."""
    return path.with_name(f"{path.name}.salvage")


def tmp_path_for(path: Path) -> Path:
    """``<name>.salvage-tmp``: the salvaged spool until it is complete and fsync'd."""
    return path.with_name(f"{path.name}.salvage-tmp")


@contextlib.contextmanager
def salvage_lock(path: Path) -> Iterator[None]:
    """One salvage of ``path`` at a time across processes (``<name>.salvage-lock``, flock).

    ``run``/``drain`` hold the spool lock, but ``enqueue`` may resume a salvage
    too: two salvages building the same ``.salvage-tmp`` would install a torn one.
    """
    lock = path.with_name(f"{path.name}.salvage-lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise SpoolError(path, f"cannot open {lock}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race)


def pending_aside(path: Path) -> Path | None:
    """The quarantined file of an unfinished salvage of ``path`` (from its intent), if any."""
    try:
        text = intent_path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SpoolError(path, f"cannot read {intent_path(path)}: {exc.strerror}") from exc
    return path.with_name(text) if text else None


def record_intent(path: Path, aside: Path) -> None:
    """Durably note that ``path`` is being salvaged from ``aside`` (before anything moves)."""
    with intent_path(path).open("w", encoding="utf-8") as fh:
        fh.write(aside.name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(path.parent)


def clear_intent(path: Path) -> None:
    """The salvage is installed: forget the intent (the quarantined file stays)."""
    intent_path(path).unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make renames, links and unlinks in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def quarantine(path: Path, aside: Path) -> None:
    """Move ``path`` and its ``-wal``/``-shm`` to ``aside`` (what is still there); durable.

    A quarantined file is never replaced: a name already taken is left alone.
    """
    for suffix in ("", "-wal", "-shm"):
        src, dst = Path(f"{path}{suffix}"), Path(f"{aside}{suffix}")
        if src.exists() and not dst.exists():
            os.rename(src, dst)
    fsync_dir(path.parent)


def salvage_into(aside: Path, path: Path) -> SalvageReport:
    """Copy what is readable in ``aside`` into a fresh spool at ``path`` and count the rest.

    Atomic: the fresh spool is built in ``<name>.salvage-tmp``, fsync'd, then
    linked to ``path`` (which must not exist) and the directory fsync'd. A
    power cut before that leaves no spool at ``path``; the next writer start
    redoes the salvage from ``aside`` (see :func:`pending_aside`), so no row
    is lost or counted twice.
    """
    found = _read_all(aside)
    lost, exact = _count_lost(found)
    epoch_kept = found.epoch is not None and found.hwm is not None
    tmp = tmp_path_for(path)
    _remove_tmp(tmp)  # a leftover is an unfinished earlier attempt
    schema.create(tmp)
    dst = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        dst.execute("BEGIN IMMEDIATE")
        _write_salvaged(dst, found, epoch_kept)
        _write_counts(dst, found, lost + _take_lost_to_corruption(path))
        _meta_set(dst, "salvaged_from", str(aside))
        dst.execute("COMMIT")
    finally:
        dst.close()  # the last connection: the WAL is checkpointed into tmp and removed
    _install(tmp, path)
    return SalvageReport(aside, len(found.rows), len(found.dead), lost, epoch_kept, exact)


def _write_counts(dst: sqlite3.Connection, found: _Salvaged, lost: int) -> None:
    merged = Counter({k: v for k, v in found.counters.items() if k.startswith("dropped.")})
    merged["dropped.corrupt"] += lost
    merged[schema.COUNT_READING] = len(found.rows)
    merged[schema.COUNT_READING_HWM] = int(dst.execute(schema.HWM_SQL).fetchone()[0])
    merged[schema.COUNT_DEAD] = len(found.dead)
    for key, value in merged.items():
        if value or key.startswith("count."):
            _meta_set(dst, key, str(value))


def _install(tmp: Path, path: Path) -> None:
    """fsync ``tmp`` and give it the name ``path`` (never over an existing file)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if a spool appeared at path meanwhile: never replace it
    except FileExistsError as exc:
        raise SpoolError(
            path,
            f"a new spool appeared here while {tmp.name} was being salvaged; left both as"
            " they are. Stop every mqttspool process using it, move the new one aside and"
            " rename the salvaged file to the spool's name",
        ) from exc
    except OSError:  # no hard links on this filesystem (e.g. vfat): rename instead
        os.rename(tmp, path)
    tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _remove_tmp(tmp: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)


def _read_all(aside: Path) -> _Salvaged:
    src = _open_readonly(aside)
    try:
        hwm = _try_one(src, "SELECT seq FROM sqlite_sequence WHERE name = 'reading'")
        meta = _try_all(src, "SELECT key, value FROM meta")
        return _Salvaged(
            epoch=_try_one(src, "SELECT value FROM meta WHERE key = 'epoch'"),
            hwm=hwm,
            counters=Counter({str(k): _int(v) for k, v in meta if str(k).startswith(_COUNTED)}),
            rows=list(_salvage_rows(src, "reading", _COLUMNS, int(hwm or 0))),
            dead=list(_salvage_rows(src, "dead_letter", _DEAD_COLUMNS, 0)),
            starts=_try_all(src, "SELECT seq, epoch FROM epoch_start ORDER BY seq"),
            shutdown=_try_one(src, f"SELECT value FROM meta WHERE key = '{SHUTDOWN_KEY}'"),
        )
    finally:
        src.close()


_COUNTED = ("dropped.", "count.")


def _write_salvaged(dst: sqlite3.Connection, found: _Salvaged, epoch_kept: bool) -> None:
    if epoch_kept:
        dst.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (str(found.epoch),))
        _write_epoch_starts(dst, found)
    # An unreadable record counts as unknown: the next writer start decides by its setting.
    dst.execute("DELETE FROM meta WHERE key = ?", (SHUTDOWN_KEY,))
    if found.shutdown is not None:
        _meta_set(dst, SHUTDOWN_KEY, str(found.shutdown))
    dst.executemany(
        f"INSERT INTO reading ({_COLUMNS}, boot_id, mono_ns) VALUES (?,?,?,?,?,?,?,?,'',0)",
        found.rows,
    )
    dst.executemany(
        f"INSERT INTO dead_letter ({_DEAD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", found.dead
    )
    if epoch_kept:
        top = max([int(found.hwm or 0), *(r[0] for r in found.rows), *(d[0] for d in found.dead)])
        dst.execute("DELETE FROM sqlite_sequence WHERE name = 'reading'")
        dst.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('reading', ?)", (top,))


def _write_epoch_starts(dst: sqlite3.Connection, found: _Salvaged) -> None:
    """Keep the old epochs' seq ranges, so salvaged rows keep their ids.

    Unreadable (or not ending in the kept epoch): one range from seq 1 in the
    kept epoch. Older rows are then sent under the kept epoch: possibly a
    duplicate under a second id, never an id of another reading (the kept
    epoch began above them).
    """
    starts = [(int(seq), str(epoch)) for seq, epoch in found.starts]
    if not starts or starts[-1][1] != str(found.epoch):
        starts = [(1, str(found.epoch))]
    dst.execute("DELETE FROM epoch_start")
    dst.executemany("INSERT INTO epoch_start (seq, epoch) VALUES (?, ?)", starts)


def _queued(found: _Salvaged) -> int | None:
    """How many rows ``reading`` held, from the counters (None if they are unreadable)."""
    count = found.counters.get(schema.COUNT_READING)
    mark = found.counters.get(schema.COUNT_READING_HWM)
    if count is None or (mark is not None and found.hwm is None):
        return None  # schema 4's count.reading_hwm needs the high-water mark too
    return schema.queued_rows(count, mark, int(found.hwm or 0))


def _count_lost(found: _Salvaged) -> tuple[int, bool]:
    """(rows the damaged file held that could not be read, whether that count is exact)."""
    queued = _queued(found)
    dead = found.counters.get(schema.COUNT_DEAD)
    if queued is not None and dead is not None:
        lost_rows = queued - len(found.rows)
        lost_dead = dead - len(found.dead)
        if lost_rows >= 0 and lost_dead >= 0:
            return lost_rows + lost_dead, True
        logger.error("salvage: row counters disagree with the rows read; estimating the loss")
    # No counters (schema 1, or meta unreadable): every gap between the lowest
    # readable queued seq and the high-water mark is taken as lost.
    seen = {r[0] for r in found.rows}
    if not seen:
        return 0, False
    top = max(int(found.hwm or 0), *seen)
    dead_seqs = {d[0] for d in found.dead if d[0] >= min(seen)}
    return int(top - min(seen) + 1 - len(seen) - len(dead_seqs)), False


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _meta_set(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _open_readonly(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error:
        conn = sqlite3.connect(str(path), isolation_level=None)
    # A file shorter than its header says (truncated) is refused as a whole
    # unless writable_schema is on; with it the pages that remain can be read.
    # Nothing is written: salvage only SELECTs from this connection.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA writable_schema = ON")
    return conn


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
    """Every readable row of ``table`` by seq ranges; damaged ranges are probed row by row.

    A damaged B-tree can hand back rows out of order or with impossible seqs;
    the cursor only moves forward and each seq is yielded once.
    """
    top = max(hwm, int(_try_one(conn, f"SELECT MAX(seq) FROM {table}") or 0))
    cursor = 0
    while cursor < top:
        try:
            chunk = conn.execute(
                f"SELECT {columns} FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?",
                (cursor, SALVAGE_CHUNK),
            ).fetchall()
        except sqlite3.DatabaseError:
            chunk = None
        if chunk == []:
            return
        good = [r for r in chunk or () if _plausible(r) and cursor < r[0] <= top]
        if chunk is None or not good or max(r[0] for r in good) <= cursor:
            yield from _probe(conn, table, columns, cursor + 1, min(top, cursor + SALVAGE_CHUNK))
            cursor += SALVAGE_CHUNK
            continue
        good = sorted({r[0]: r for r in good}.values())
        yield from good
        cursor = int(good[-1][0])


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
    """Reject rows whose bytes were scrambled into the wrong types or zeroed.

    A truncated file ends in a partial page that SQLite reads as zeros past
    the cut: such a row has NUL bytes where names were.
    """
    seq, device, sensor, metric, value, _unit, ts_us, synced = row[:8]
    names = (device, sensor, metric)
    return (
        isinstance(seq, int)
        and all(isinstance(s, str) and s and "\x00" not in s for s in names)
        and isinstance(value, int | float)
        and isinstance(ts_us, int)
        and synced in (0, 1)
    )
