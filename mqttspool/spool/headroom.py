"""Disk headroom: a reserve file beside the spool, given back when the disk fills.

SQLite needs free space even to delete (the WAL grows before pages are
freed), so a spool that filled its disk could neither settle what the broker
acknowledged nor drop its oldest rows. Once free space on the spool's
filesystem falls below :data:`HOLD_BELOW_FREE`, ``<spool>.reserve`` holds
:data:`RESERVE_BYTES` of zeros (at most 1/16 of a small filesystem). On the
first "disk full" the spool deletes it, checkpoints and truncates the WAL and
retries, so deletes, drop counters and ``drop_oldest`` can commit. It is
created again once free space is back to twice its size. The WAL's
auto-checkpoint threshold is kept at half the reserve, so that checkpoint
always has room.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from mqttspool.logthrottle import LogThrottle
from mqttspool.spool.dberrors import free_bytes

logger = logging.getLogger(__name__)

RESERVE_BYTES = 8 << 20
HOLD_BELOW_FREE = 256 << 20  # with more free space than this, no reserve is needed yet
RESERVE_FRACTION = 16  # never more than 1/16 of the filesystem
RESERVE_SUFFIX = ".reserve"
RELEASE_LOG_INTERVAL_S = 60.0


class Reserve:
    """The reserve file of one spool."""

    def __init__(self, spool_path: Path, size: int | None = None) -> None:
        self.path = Path(str(spool_path) + RESERVE_SUFFIX)
        self.size = _default_size(self.path.parent) if size is None else size
        self._log = LogThrottle(RELEASE_LOG_INTERVAL_S)
        # The sampler and bridge threads share one reserve: creating and releasing
        # it must not interleave (a release mid-creation would be undone by it).
        self._lock = threading.Lock()

    def held(self) -> bool:
        """The reserve file exists."""
        return self.path.exists()

    def ensure(self) -> bool:
        """True if headroom is assured: the reserve is held, or free space makes it unneeded.

        Creates the reserve when it is needed and the disk has room for it
        twice over; False while it is needed but cannot be created.
        """
        with self._lock:
            return self._ensure()

    def _ensure(self) -> bool:
        if self.size <= 0 or self.held():
            return True
        free = free_bytes(self.path.parent)
        if free >= HOLD_BELOW_FREE:
            return True
        if free < 2 * self.size:
            return False
        try:
            with self.path.open("wb") as fh:
                fh.write(b"\0" * self.size)  # written, so the blocks are really allocated
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            logger.debug("cannot create disk reserve %s: %s", self.path, exc)
            return False
        return True

    def release(self) -> bool:
        """Delete the reserve to make room; True if there was one to give back."""
        with self._lock:
            return self._release()

    def _release(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.error("cannot release disk reserve %s: %s", self.path, exc)
            return False
        count = self._log.note()
        if count:
            logger.error(
                "disk holding %s is full: released the %d KiB reserve so acknowledged readings"
                " can be deleted and drops counted (%d time(s) since the last message); free"
                " space on that filesystem",
                self.path.parent,
                self.size >> 10,
                count,
            )
        return True


def _default_size(directory: Path) -> int:
    try:
        st = os.statvfs(directory)
    except OSError:
        return RESERVE_BYTES
    return min(RESERVE_BYTES, st.f_blocks * st.f_frsize // RESERVE_FRACTION)


WAL_FRAME_HEADER = 24  # bytes before every page in the WAL
WAL_MAX_BYTES = 1000 * 4096  # SQLite's default threshold (1000 pages of 4 KiB)
WAL_MIN_BYTES = 16 * 4096


def wal_pages(reserve_size: int, page_size: int) -> int:
    """The WAL auto-checkpoint threshold, in pages of the spool's ``page_size``.

    The WAL may grow to half the reserve (so a checkpoint on a full disk has
    room), at most SQLite's default of ~4 MB: counted in the file's real pages,
    a spool of 512-byte pages checkpoints as rarely as one of 4 KiB pages
    (every checkpoint costs a pair of fsyncs).
    """
    wal_bytes = max(WAL_MIN_BYTES, min(WAL_MAX_BYTES, reserve_size // 2))
    return max(1, wal_bytes // (page_size + WAL_FRAME_HEADER))
