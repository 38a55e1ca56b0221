"""One rate limiter for repetitive log lines (drops, connect failures, dead letters, ...).

A flapping link or a full disk can produce thousands of identical events a
minute; the log gets one line per key per interval, carrying how many events
it stands for. Keys are free-form (a drop reason, a failure kind), so one
throttle can serve several kinds of event at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable


class LogThrottle:
    """Let one log line per key through every ``interval`` seconds, counting the rest.

    :meth:`note` returns the number of events (including this one) the caller
    should report in the line it is about to log, or 0 when it must stay
    quiet. Thread-safe; the clock is injectable for tests.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._pending: Counter[Hashable] = Counter()
        self._lock = threading.Lock()

    def note(self, key: Hashable = None, n: int = 1) -> int:
        """Record ``n`` events under ``key``; the count to log now, or 0 to stay quiet."""
        with self._lock:
            self._pending[key] += n
            now = self._clock()
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                return 0
            self._last[key] = now
            count, self._pending[key] = self._pending[key], 0
            return count

    def flush(self, key: Hashable = None) -> int:
        """Events under ``key`` not yet reported (and forget them): for a closing summary."""
        with self._lock:
            count, self._pending[key] = self._pending[key], 0
            return count

    def reset(self, key: Hashable = None) -> None:
        """Forget ``key``: the next event is logged at once (e.g. after a state change)."""
        with self._lock:
            self._last.pop(key, None)
            self._pending.pop(key, None)
