"""In-process counters and gauges shared by sampler, bridge and the metrics endpoint.

Plain Python and thread-safe, so the core never depends on prometheus-client;
:mod:`mqttspool.prometheus` exports these values when the optional extra is installed.
"""

from __future__ import annotations

import threading
from collections import Counter


class Counters:
    """Counters (monotonic) and gauges (current values) with string label tuples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[tuple[str, tuple[str, ...]]] = Counter()
        self._gauges: dict[tuple[str, tuple[str, ...]], float] = {}

    def inc(self, name: str, labels: tuple[str, ...] = (), n: float = 1) -> None:
        """Add ``n`` to counter ``name`` with ``labels``."""
        with self._lock:
            self._counters[(name, labels)] += n  # type: ignore[assignment]

    def set(self, name: str, value: float, labels: tuple[str, ...] = ()) -> None:
        """Set gauge ``name`` with ``labels`` to ``value``."""
        with self._lock:
            self._gauges[(name, labels)] = value

    def counter(self, name: str, labels: tuple[str, ...] = ()) -> float:
        """Current value of a counter (0 if never incremented)."""
        with self._lock:
            return float(self._counters[(name, labels)])

    def gauge(self, name: str, labels: tuple[str, ...] = ()) -> float | None:
        """Current value of a gauge, or None if never set."""
        with self._lock:
            return self._gauges.get((name, labels))

    def by_labels(self, name: str) -> dict[tuple[str, ...], float]:
        """Every label set of counter ``name`` with its value."""
        with self._lock:
            return {lab: float(v) for (n, lab), v in self._counters.items() if n == name}


# Names used across modules (labels in brackets).
SENSOR_READS = "sensor_reads_total"  # [sensor, result] result: ok | error
MESSAGES_PUBLISHED = "messages_published_total"  # [] acknowledged data messages
BROKER_CONNECTED = "broker_connected"  # gauge 0/1
READINGS_PAUSED = "readings_paused"  # gauge 0/1: the consumer gate holds readings back
