"""Drop counters: counted in memory at once, persisted in the next write transaction.

A reading the spool could not keep is counted by reason (``dropped.<reason>``
in ``meta``). When the drop happens where no transaction can commit (a full
disk), the count waits here as *pending* and the next transaction that
commits carries it; :meth:`DropCounters.persist` registers an undo so a
transaction that rolls back makes the counts pending again. The lock guards
only the pending counter, which the sampler and bridge threads share.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from mqttspool.logthrottle import LogThrottle

logger = logging.getLogger(__name__)

DROP_LOG_INTERVAL_S = 60.0


class DropCounters:
    """The pending (not yet persisted) drop counts of one spool, and their log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._log = LogThrottle(DROP_LOG_INTERVAL_S)

    def count_pending(self, reason: str, n: int) -> None:
        """Count ``n`` drops that no transaction has persisted yet."""
        with self._lock:
            self._pending[reason] += n
        self._note(reason, n)

    def pending(self) -> Counter[str]:
        """A copy of the pending counts."""
        with self._lock:
            return Counter(self._pending)

    def persist(
        self,
        cur: sqlite3.Cursor,
        dropped: Counter[str],
        on_undo: Callable[[Callable[[], None]], None],
    ) -> None:
        """Add ``dropped`` and every pending count to ``meta`` inside the open transaction."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
        on_undo(lambda: self._restore(pending))
        for reason, n in (dropped + pending).items():
            if n:
                cur.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                    " SET value = CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER)",
                    (f"dropped.{reason}", str(n)),
                )

    def log(self, dropped: Counter[str]) -> None:
        """Log committed drops (rate-limited per reason)."""
        for reason, n in dropped.items():
            if n:
                self._note(reason, n)

    def _note(self, reason: str, n: int) -> None:
        count = self._log.note(reason, n)
        if count:
            logger.warning(
                "spool %s: dropped %d reading(s), reason %s (logged at most once per %ds)",
                self.path,
                count,
                reason,
                int(DROP_LOG_INTERVAL_S),
            )

    def _restore(self, pending: Counter[str]) -> None:
        with self._lock:
            self._pending.update(pending)
