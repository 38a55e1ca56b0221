"""The one place where peewee/sqlite3 errors become mqttspool's own exceptions.

Every public :class:`~mqttspool.spool.store.Spool` method runs inside
:func:`map_errors` (via the :func:`mapped` decorator), as httpx's
``map_exceptions`` does for its transports: corruption becomes
:class:`SpoolCorruptError` (the supervisor salvages), a full disk
:class:`SpoolFullError`, anything else :class:`SpoolError`, each naming the
file and what to do.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mqttspool.errors import SpoolCorruptError, SpoolError, SpoolFullError
from mqttspool.spool.orm import pw

# peewee wraps errors raised by execute(), but not those raised later while
# fetching rows, nor those of the raw cursors used inside transactions.
DB_ERRORS = (pw.DatabaseError, sqlite3.DatabaseError)
NEAR_FULL_BYTES = 1 << 20  # an I/O error with less free space than this is a full disk


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


def free_bytes(directory: Path) -> int:
    """Bytes available to us on the filesystem of ``directory`` (huge if unknown)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def is_full(exc: BaseException, path: Path) -> bool:
    """``exc`` means the disk (or the file system holding ``path``) is full."""
    code = sqlite_error_code(exc)
    if code == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        return True
    # ENOSPC while SQLite grows the -shm or -wal file surfaces as SQLITE_IOERR_*
    # (e.g. IOERR_SHMSIZE); Python does not expose errno, so ask the filesystem.
    return code == sqlite3.SQLITE_IOERR and free_bytes(path.parent) < NEAR_FULL_BYTES


def is_corrupt(exc: BaseException) -> bool:
    """``exc`` means the database file is damaged (or not a database at all)."""
    if sqlite_error_code(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    return "malformed" in str(exc)


def translate(exc: BaseException, path: Path, doing: str) -> SpoolError:
    """The mqttspool exception for a database error ``exc`` raised while ``doing``."""
    if is_corrupt(exc):
        return SpoolCorruptError(
            path,
            f"SQLite reports corruption while trying to {doing}: {exc}; `mqttspool run`"
            " (or `drain`) moves the file aside and salvages it",
        )
    if is_full(exc, path):
        return SpoolFullError(
            path, f"disk full while trying to {doing}; free space on its filesystem", dropped=0
        )
    text = str(exc)
    if "readonly" in text or "unable to open" in text:
        return SpoolError(
            path,
            f"cannot {doing}: {text}; check that the file and its directory {path.parent}"
            f" are writable by this user (SQLite keeps {path.name}-wal and {path.name}-shm"
            " beside it)",
        )
    return SpoolError(path, f"cannot {doing}: {text}")


@contextlib.contextmanager
def map_errors(path: Path, doing: str) -> Iterator[None]:
    """Turn every database error raised inside the block into a :class:`SpoolError`."""
    try:
        yield
    except SpoolError:
        raise
    except DB_ERRORS as exc:
        raise translate(exc, path, doing) from exc


class _HasPath(Protocol):
    path: Path

    def _on_database_error(self) -> None: ...


_F = TypeVar("_F", bound=Callable[..., Any])


def mapped(doing: str) -> Callable[[_F], _F]:
    """Decorate a public spool method so its database errors are mapped by :func:`map_errors`.

    Before translating, the spool's ``_on_database_error`` hook runs (it checks
    whether the file was deleted under us and raises a more precise error).
    """

    def decorate(method: _F) -> _F:
        @functools.wraps(method)
        def wrapper(self: _HasPath, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except SpoolError:
                raise
            except DB_ERRORS as exc:
                self._on_database_error()
                raise translate(exc, self.path, doing) from exc

        return wrapper  # type: ignore[return-value]

    return decorate
