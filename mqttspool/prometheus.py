"""Optional Prometheus endpoint (``[metrics] enabled = true``; extra ``mqttspool[metrics]``).

Values are read at scrape time by a custom collector: the spool's depth, age,
dead letters and drop counters come from ``stats_source()`` (a
:class:`~mqttspool.spool.SpoolStats`, or None while the spool is closed); the
process counters come from :class:`~mqttspool.counters.Counters`. Nothing is
kept twice, so a scrape never disagrees with ``mqttspool status`` by more
than :data:`STATS_TTL_S`.

The endpoint is bounded, because anything on the network can talk to it:

* spool statistics are computed by ONE thread (one SQLite connection for the
  life of the server) and shared by every scrape within :data:`STATS_TTL_S`,
  so a burst of scrapes costs one query, not one connection and one table
  scan each (:class:`SharedStats`);
* at most :data:`MAX_CLIENTS` requests are served at once; further
  connections get ``503`` at once and are closed;
* every socket read or write times out after :data:`REQUEST_TIMEOUT_S`, and a
  request still open :data:`REQUEST_DEADLINE_S` after it was accepted is cut,
  however slowly its bytes trickle in (:class:`BoundedWSGIServer`).

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

import contextlib
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from mqttspool.config import METRICS_INSTALL_HINT
from mqttspool.counters import (
    BROKER_CONNECTED,
    MESSAGES_PUBLISHED,
    READINGS_PAUSED,
    SENSOR_READS,
    Counters,
)
from mqttspool.errors import ConfigError
from mqttspool.logthrottle import LogThrottle

if TYPE_CHECKING:
    from mqttspool.config import Settings
    from mqttspool.spool import SpoolStats

logger = logging.getLogger(__name__)

StatsSource = Callable[[], "SpoolStats | None"]
INSTALL_HINT = METRICS_INSTALL_HINT
# The reasons the spool counts drops by (README, Metrics); exported as 0 until the first.
DROP_REASONS = (
    "corrupt",
    "disk_full",
    "max_age",
    "max_rows",
    "min_free_bytes",
    "purged",
    "spool_error",
)
STATS_TTL_S = 1.0  # scrapes within this share one spool query
STATS_WAIT_S = 10.0  # a scrape waits this long for the statistics, then omits them
MAX_CLIENTS = 8  # requests served at once; more get 503
REQUEST_TIMEOUT_S = 5.0  # per socket read or write
REQUEST_DEADLINE_S = 15.0  # a whole request, from accept to close
POLL_S = 0.5  # how often the server cuts requests past their deadline
WARN_INTERVAL_S = 300.0
REFUSED = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"


def _import_prometheus(setting: str = "metrics.enabled") -> Any:
    try:
        import prometheus_client  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise ConfigError(
            setting,
            [(setting, f"needs prometheus-client, which is not installed: {INSTALL_HINT}")],
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
        self._warnings = LogThrottle(WARN_INTERVAL_S)

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
        paused = GaugeMetricFamily(
            "mqttspool_readings_paused",
            "1 while readings are held back for a consumer (bridge.require_subscribers,"
            " bridge.consumer_topic), else 0.",
        )
        paused.add_metric([], self.counters.gauge(READINGS_PAUSED) or 0.0)
        yield paused
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
        # Every known reason from the start, so an alert on increase() sees 0 -> 1.
        for reason, n in sorted((dict.fromkeys(DROP_REASONS, 0) | dict(stats.dropped)).items()):
            dropped.add_metric([reason], float(n))
        yield dropped
        dead = gauge("mqttspool_dead_letters", "Readings the broker rejected (dead-letter table).")
        dead.add_metric([], float(stats.dead_letters))
        yield dead

    def _stats(self) -> SpoolStats | None:
        try:
            return self.stats_source()
        except Exception:  # a failed read (spool closing) must not fail the other metrics
            failures = self._warnings.note()
            if failures:
                logger.warning(
                    "metrics: cannot read the spool statistics (%d time(s) since the last message)",
                    failures,
                    exc_info=True,
                )
            return None


class SharedStats:
    """Spool statistics computed by one worker thread, shared by scrapes within ``ttl`` s.

    The worker is the only thread that reads the spool for the endpoint, so the
    spool keeps one SQLite connection for it however many scrapes come and go.
    """

    def __init__(
        self,
        source: StatsSource,
        ttl: float = STATS_TTL_S,
        wait: float = STATS_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._ttl = ttl
        self._wait = wait
        self._clock = clock
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="mqttspool-metrics-stats")
        self._lock = threading.Lock()
        self._future: Future[SpoolStats | None] | None = None
        self._started = 0.0

    def __call__(self) -> SpoolStats | None:
        """The statistics of the last ``ttl`` s, or fresh ones; raises what the source raised."""
        with self._lock:
            future = self._future
            stale = future is None or (future.done() and self._clock() - self._started >= self._ttl)
            if stale:
                self._started = self._clock()
                future = self._future = self._worker.submit(self._source)
        assert future is not None
        return future.result(self._wait)

    def close(self) -> None:
        """Stop the worker (its thread, and with it its spool connection, ends)."""
        self._worker.shutdown(wait=False, cancel_futures=True)


class _QuietHandler(WSGIRequestHandler):
    """A WSGI request handler that logs nothing per request (subclassed with a timeout)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: one line per scrape would flood the log."""


class BoundedWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """A threading WSGI server with a cap on concurrent requests and a deadline on each."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # a burst is accepted (and refused at once) instead of stalling

    def __init__(
        self,
        address: tuple[str, int],
        max_clients: int = MAX_CLIENTS,
        request_timeout: float = REQUEST_TIMEOUT_S,
        deadline: float = REQUEST_DEADLINE_S,
    ) -> None:
        self.address_family = socket.getaddrinfo(*address, type=socket.SOCK_STREAM)[0][0]
        self.deadline = deadline
        self._slots = threading.BoundedSemaphore(max_clients)
        self._active: dict[socket.socket, float] = {}
        self._active_lock = threading.Lock()
        handler = type("_TimedHandler", (_QuietHandler,), {"timeout": request_timeout})
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve in a new thread if a slot is free; otherwise answer 503 and close."""
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(REFUSED)
            self.shutdown_request(request)
            return
        with self._active_lock:
            self._active[request] = time.monotonic() + self.deadline
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one request, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def service_actions(self) -> None:
        """Cut requests past their deadline (runs in the serving loop every poll)."""
        now = time.monotonic()
        with self._active_lock:
            late = [sock for sock, deadline in self._active.items() if deadline <= now]
        for sock in late:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken or hostile client is not worth more than a debug line."""
        logger.debug("metrics: request from %s failed", client_address, exc_info=True)

    def _done(self, request: Any) -> None:
        with self._active_lock:
            if self._active.pop(request, None) is None:
                return
        self._slots.release()


class MetricsServer:
    """Serves Prometheus text on ``[metrics] host:port`` from a daemon thread (bounded)."""

    def __init__(
        self,
        settings: Settings,
        counters: Counters,
        stats_source: StatsSource,
        clock: Callable[[], float] = time.time,
        limits: tuple[int, float, float] = (MAX_CLIENTS, REQUEST_TIMEOUT_S, REQUEST_DEADLINE_S),
    ) -> None:
        self.host = settings.metrics.host
        self.port = settings.metrics.port
        self.limits = limits  # (max clients, per-read timeout, per-request deadline)
        self._prom = _import_prometheus()
        from mqttspool import __version__  # noqa: PLC0415 - the package imports lazily

        self.registry = self._prom.CollectorRegistry(auto_describe=False)
        self.stats = SharedStats(stats_source)
        self.collector = SpoolCollector(counters, self.stats, __version__, clock)
        self.registry.register(self.collector)
        self._server: BoundedWSGIServer | None = None
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
            server = BoundedWSGIServer((self.host, self.port), *self.limits)
        except OSError as exc:
            raise ConfigError(
                "metrics",
                [("metrics.port", f"cannot listen on {self.host}:{self.port}: {exc.strerror}")],
            ) from exc
        server.set_app(self._prom.make_wsgi_app(self.registry))
        thread = threading.Thread(
            target=server.serve_forever, args=(POLL_S,), name="mqttspool-metrics", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        logger.info("prometheus metrics on http://%s:%d/metrics", self.host, self.bound_port)

    def stop(self) -> None:
        """Stop serving, free the port and end the statistics worker."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self.stats.close()
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5)
