"""Disk headroom: a reserve file beside the spool, given back when the disk fills.

SQLite needs free space even to delete (the WAL grows before pages are
freed), so a spool that filled its disk could neither settle what the broker
acknowledged nor drop its oldest rows. ``<spool>.reserve`` holds
:data:`RESERVE_BYTES` of zeros (at most 1/16 of a small filesystem) while
there is room; on the first "disk full"
the spool deletes it and retries, so deletes, drop counters and
``drop_oldest`` can commit. It is created again once free space is back to
twice its size.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mqttspool.logthrottle import LogThrottle
from mqttspool.spool.dberrors import free_bytes

logger = logging.getLogger(__name__)

RESERVE_BYTES = 1 << 20
RESERVE_FRACTION = 16  # never more than 1/16 of the filesystem
RESERVE_SUFFIX = ".reserve"
RELEASE_LOG_INTERVAL_S = 60.0


class Reserve:
    """The reserve file of one spool."""

    def __init__(self, spool_path: Path, size: int | None = None) -> None:
        self.path = Path(str(spool_path) + RESERVE_SUFFIX)
        self.size = _default_size(self.path.parent) if size is None else size
        self._log = LogThrottle(RELEASE_LOG_INTERVAL_S)

    def held(self) -> bool:
        """The reserve file exists."""
        return self.path.exists()

    def ensure(self) -> bool:
        """Create the reserve if it is missing and the disk has room for it twice over."""
        if self.size <= 0 or self.held():
            return self.held()
        if free_bytes(self.path.parent) < 2 * self.size:
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
