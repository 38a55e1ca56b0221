"""Optional Prometheus endpoint (``[metrics] enabled = true``; extra ``mqttspool[metrics]``).

Values are read at scrape time by a custom collector: the spool's depth, age,
dead letters and drop counters come from ``stats_source()`` (a
:class:`~mqttspool.spool.SpoolStats`, or None while the spool is closed); the
process counters come from :class:`~mqttspool.counters.Counters`. Nothing is
kept twice, so a scrape never disagrees with ``mqttspool status``.

Exported (``mqttspool_`` prefix):

* ``spool_messages`` (gauge): readings waiting in the spool;
* ``spool_oldest_message_age_seconds`` (gauge): age of the oldest, 0 when empty;
* ``messages_published_total`` (counter): data messages acknowledged since start;
* ``messages_dropped_total{reason}`` (counter): persisted drop counters of the spool;
* ``dead_letters`` (gauge): rows in the dead-letter table;
* ``broker_connected`` (gauge): 1 while connected;
* ``sensor_reads_total{sensor,result}`` (counter): result ``ok`` or ``error``;
* ``build_info{version}`` (gauge, always 1).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from mqttspool.counters import BROKER_CONNECTED, MESSAGES_PUBLISHED, SENSOR_READS, Counters
from mqttspool.errors import ConfigError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from mqttspool.config import Settings
    from mqttspool.spool import SpoolStats

logger = logging.getLogger(__name__)

StatsSource = Callable[[], "SpoolStats | None"]
INSTALL_HINT = "pip install 'mqttspool[metrics]'"


def _import_prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise ConfigError(
            "metrics.enabled",
            [
                (
                    "metrics.enabled",
                    f"needs prometheus-client, which is not installed: {INSTALL_HINT}",
                )
            ],
        ) from exc
    return prometheus_client


class SpoolCollector:
    """A prometheus_client collector that reads spool and counters at scrape time."""

    def __init__(
        self,
        counters: Counters,
        stats_source: StatsSource,
        version: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.stats_source = stats_source
        self.version = version
        self.clock = clock

    def describe(self) -> list[Any]:
        """Nothing up front: the registry then does not call :meth:`collect` at registration."""
        return []

    def collect(self) -> Iterator[Any]:
        """Yield every metric family, reading current values."""
        from prometheus_client.core import (  # noqa: PLC0415 - optional extra
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        yield from self._spool_families(CounterMetricFamily, GaugeMetricFamily)
        published = CounterMetricFamily(
            "mqttspool_messages_published_total",
            "Data messages acknowledged by the broker since the process started.",
        )
        published.add_metric([], self.counters.counter(MESSAGES_PUBLISHED))
        yield published
        connected = GaugeMetricFamily(
            "mqttspool_broker_connected", "1 while connected to the broker, else 0."
        )
        connected.add_metric([], self.counters.gauge(BROKER_CONNECTED) or 0.0)
        yield connected
        reads = CounterMetricFamily(
            "mqttspool_sensor_reads_total",
            "Sensor reads by sensor and result (ok or error).",
            labels=["sensor", "result"],
        )
        for (sensor, result), value in sorted(self.counters.by_labels(SENSOR_READS).items()):
            reads.add_metric([sensor, result], value)
        yield reads
        build = GaugeMetricFamily(
            "mqttspool_build_info", "Always 1; the version is a label.", labels=["version"]
        )
        build.add_metric([self.version], 1.0)
        yield build

    def _spool_families(self, counter: Any, gauge: Any) -> Iterator[Any]:
        stats = self._stats()
        if stats is None:
            return
        depth = gauge("mqttspool_spool_messages", "Readings waiting in the spool.")
        depth.add_metric([], float(stats.depth))
        yield depth
        age = gauge(
            "mqttspool_spool_oldest_message_age_seconds",
            "Age of the oldest reading in the spool (0 when empty).",
        )
        age.add_metric([], stats.oldest_age_seconds(int(self.clock() * 1_000_000)) or 0.0)
        yield age
        dropped = counter(
            "mqttspool_messages_dropped_total",
            "Readings dropped by the spool, by reason (persisted across restarts).",
            labels=["reason"],
        )
        for reason, n in sorted(stats.dropped.items()):
            dropped.add_metric([reason], float(n))
        yield dropped
        dead = gauge("mqttspool_dead_letters", "Readings the broker rejected (dead-letter table).")
        dead.add_metric([], float(stats.dead_letters))
        yield dead

    def _stats(self) -> SpoolStats | None:
        try:
            return self.stats_source()
        except Exception:  # a failed read (spool closing) must not fail the other metrics
            logger.warning("metrics: cannot read the spool statistics", exc_info=True)
            return None


class MetricsServer:
    """Serves Prometheus text on ``[metrics] host:port`` from a daemon thread."""

    def __init__(
        self,
        settings: Settings,
        counters: Counters,
        stats_source: StatsSource,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = settings.metrics.host
        self.port = settings.metrics.port
        self._prom = _import_prometheus()
        from mqttspool import __version__  # noqa: PLC0415 - the package imports lazily

        self.registry = self._prom.CollectorRegistry(auto_describe=False)
        self.collector = SpoolCollector(counters, stats_source, __version__, clock)
        self.registry.register(self.collector)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def bound_port(self) -> int:
        """The port actually listened on (differs from ``port`` only when that is 0)."""
        if self._server is None:
            raise RuntimeError("metrics server is not running")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve; raises :class:`ConfigError` if the address cannot be bound."""
        try:
            server, thread = self._prom.start_http_server(
                self.port, addr=self.host, registry=self.registry
            )
        except OSError as exc:
            raise ConfigError(
                "metrics",
                [("metrics.port", f"cannot listen on {self.host}:{self.port}: {exc.strerror}")],
            ) from exc
        self._server, self._thread = server, thread
        logger.info("prometheus metrics on http://%s:%d/metrics", self.host, self.bound_port)

    def stop(self) -> None:
        """Stop serving and free the port."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5)
