"""File identity: is the file at the spool's path still the one this process opened?

A spool deleted or replaced under a running daemon would swallow every
reading written afterwards (into an unlinked file) or mix two spools. The
spool remembers the (device, inode) it opened, checks it every
:data:`FILE_CHECK_S` before a write and whenever SQLite reports an error,
and from then on every write raises the same
:class:`~mqttspool.errors.SpoolGoneError` (shared by all threads).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mqttspool.errors import SpoolGoneError

FILE_CHECK_S = 30.0  # how often the spool checks that its file is still the one on disk


def identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of ``path``, or None if there is no file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class FileIdentity:
    """The opened file's identity and, once it is gone, the one error every write raises."""

    def __init__(self, path: Path, stranded: Callable[[], int | None]) -> None:
        """``stranded``: how many rows the unlinked file still holds (None: unknown)."""
        self.path = path
        self._stranded = stranded
        self._opened = identity(path)
        self._checked_at = time.monotonic()
        self._gone: SpoolGoneError | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise :class:`SpoolGoneError` if the file at ``path`` is no longer the one opened."""
        self._checked_at = time.monotonic()
        now = identity(self.path)
        if now is not None and now == self._opened:
            return
        with self._lock:
            if self._gone is None:
                self._gone = self._gone_error(now)
            raise self._gone

    def maybe_check(self) -> None:
        """Before a write: raise if gone; check again when :data:`FILE_CHECK_S` passed."""
        with self._lock:
            gone = self._gone
        if gone is not None:
            raise gone  # once gone, every write says so (callers may retry)
        if time.monotonic() - self._checked_at >= FILE_CHECK_S:
            self.check()

    def on_database_error(self) -> None:
        """A vanished file explains a database error better than SQLite does."""
        if self._opened is not None and identity(self.path) != self._opened:
            self.check()

    def _gone_error(self, now: tuple[int, int] | None) -> SpoolGoneError:
        what = "deleted" if now is None else "replaced by another file"
        # A new file at the path shares the -wal/-shm names with the old one,
        # so what this connection reads then is no reliable count.
        stranded = self._stranded() if now is None else None
        held = "an unknown number of" if stranded is None else str(stranded)
        return SpoolGoneError(
            self.path,
            f"was {what} while open; {held} queued reading(s) remain in the unlinked file"
            " and will not be delivered. Stop mqttspool, restore the file if you can"
            " (e.g. from /proc/<pid>/fd while it runs), then start it again",
            stranded,
        )
