"""Disk-full handling of one spool: the full state, free space, and retrying with headroom.

On ``ENOSPC``/``SQLITE_FULL`` the spool enters the full state: it gives back
the reserve (:mod:`~mqttspool.spool.headroom`) and the WAL's slack, so
deletes and drop counters can still commit, and retries once. While full, it
checkpoints after every commit, and an append spends no headroom but applies
the overflow policy once (see :mod:`~mqttspool.spool.queue`). It leaves the
state once the reserve can be held again.

Threads: the sampler and the bridge share one :class:`DiskGuard`; entering
and leaving the full state (with the reserve) happen under one lock, so a
thread seeing space come back cannot undo another thread's ``ENOSPC``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mqttspool.spool.dberrors import DB_ERRORS, free_bytes, is_full
from mqttspool.spool.headroom import Reserve

logger = logging.getLogger(__name__)

FREE_SPACE_CHECK_S = 1.0
# Far above the bound, a reading is trusted longer: filling FREE_SPACE_MARGIN within
# FREE_SPACE_RELAXED_S takes 6 MB/s, and a disk that does fill is ENOSPC, handled
# on its own. statvfs once a second was a tenth of a sampling round's CPU.
FREE_SPACE_RELAXED_S = 10.0
FREE_SPACE_MARGIN = 64 << 20
_T = TypeVar("_T")


class DiskGuard:
    """The full state, the reserve and the free-space reading of one spool file."""

    def __init__(self, path: Path, db: Any, full: bool = False) -> None:
        """``full``: the opener had to use the reserve to open; keep the rest for deletes."""
        self.path = path
        self.db = db
        self.reserve = Reserve(path)
        self._lock = threading.RLock()
        self._full = full  # set on ENOSPC, cleared when the reserve is back
        self._free_checked_at = -1e18
        self._free_bytes = 1 << 62

    @property
    def full(self) -> bool:
        """The disk was full and headroom is not assured again yet."""
        return self._full

    def free_space(self, bound: int = 0) -> int:
        """Free bytes on the spool's filesystem, read at most every FREE_SPACE_CHECK_S --
        or every FREE_SPACE_RELAXED_S while the last reading was more than
        FREE_SPACE_MARGIN above ``bound`` (the caller's limit) and the disk is not full."""
        now = time.monotonic()
        relaxed = not self._full and self._free_bytes - bound > FREE_SPACE_MARGIN
        interval = FREE_SPACE_RELAXED_S if relaxed else FREE_SPACE_CHECK_S
        if now - self._free_checked_at >= interval:
            self._free_bytes = free_bytes(self.path.parent)
            self._free_checked_at = now
            if not self.reserve.held():
                self.space_is_back()
        return self._free_bytes

    def enter_full(self) -> None:
        """ENOSPC: give back the reserve and the WAL's slack so deletes can commit."""
        with self._lock:
            self._full = True
            self.reserve.release()
        self.checkpoint()

    def space_is_back(self) -> bool:
        """Leave the full state once headroom is assured again; True when not full."""
        with self._lock:
            if self.reserve.ensure():
                if self._full:
                    logger.warning("spool %s: disk space is back; reserve restored", self.path)
                self._full = False
            return not self._full

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it, returning its space to the disk."""
        with contextlib.suppress(*DB_ERRORS):
            self.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def retry(self, write: Callable[[], _T]) -> _T:
        """Run ``write``; on a full disk release the reserve and the WAL, run it once more."""
        try:
            return write()
        except DB_ERRORS as exc:
            if not is_full(exc, self.path):
                raise
        self.enter_full()
        return write()
