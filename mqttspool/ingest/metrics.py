"""Prometheus export for ``mqttspool ingest`` (``[ingest.metrics]``; extra ``metrics``).

Served with the same bounded server as the bridge's endpoint
(:class:`~mqttspool.prometheus.BoundedWSGIServer`). Values come from the
consumer's last completeness refresh (every ``ingest.status_interval``), so a
scrape never touches the database:

* ``mqttspool_ingest_unexplained_missing{epoch,devices}`` (gauge): readings
  missing in gaps no drop counter explains; alert when above 0;
* ``mqttspool_ingest_missing{epoch,devices}`` (gauge): all missing readings;
* ``mqttspool_ingest_messages_total`` / ``_duplicates_total`` (counters, since start);
* ``mqttspool_ingest_quarantined_total`` (counter, since start): messages the decoder
  or the database refused, kept in ``ingest_quarantine`` and acknowledged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from mqttspool.errors import ConfigError
from mqttspool.ingest.consumer import IngestConsumer
from mqttspool.prometheus import POLL_S, BoundedWSGIServer, _import_prometheus

logger = logging.getLogger(__name__)


class IngestCollector:
    """A prometheus_client collector over an :class:`IngestConsumer`'s numbers."""

    def __init__(self, consumer: IngestConsumer) -> None:
        self.consumer = consumer

    def describe(self) -> list[Any]:
        """Nothing up front (no collect at registration)."""
        return []

    def collect(self) -> Iterator[Any]:
        """Yield the gauges and counters."""
        from prometheus_client.core import (  # noqa: PLC0415 - optional extra
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        labels = ["epoch", "devices"]
        unexplained = GaugeMetricFamily(
            "mqttspool_ingest_unexplained_missing",
            "Readings missing in gaps that no drop counter explains.",
            labels=labels,
        )
        missing = GaugeMetricFamily(
            "mqttspool_ingest_missing", "Readings missing between received seqs.", labels=labels
        )
        for r in self.consumer.reports:
            unexplained.add_metric([r.epoch, ",".join(r.devices)], float(r.unexplained))
            missing.add_metric([r.epoch, ",".join(r.devices)], float(r.missing))
        yield unexplained
        yield missing
        totals = self.consumer.totals
        for name, value, doc in (
            ("messages", totals.messages, "Messages stored and acknowledged since start."),
            ("duplicates", totals.duplicates, "Readings already in the database since start."),
            ("quarantined", totals.undecodable, "Messages refused and quarantined since start."),
        ):
            family = CounterMetricFamily(f"mqttspool_ingest_{name}_total", doc)
            family.add_metric([], float(value))
            yield family


class IngestMetricsServer:
    """Serves :class:`IngestCollector` on ``host:port`` from a daemon thread.

    :meth:`bind` (at start-up, before ingest creates anything) takes the port
    and checks the extra; :meth:`serve` starts answering for a consumer.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._prom = _import_prometheus("ingest.metrics.enabled")
        self._server: BoundedWSGIServer | None = None
        self._serving = False

    def bind(self) -> None:
        """Take the address; raises :class:`ConfigError` if it cannot be bound."""
        try:
            self._server = BoundedWSGIServer((self.host, self.port))
        except OSError as exc:
            where = f"{self.host}:{self.port}"
            problem = f"cannot listen on {where}: {exc.strerror} (another process? `run` uses"
            problem += " [metrics].port; give ingest another [ingest.metrics].port)"
            raise ConfigError("ingest.metrics", [("ingest.metrics.port", problem)]) from exc

    def serve(self, consumer: IngestConsumer) -> None:
        """Answer scrapes with ``consumer``'s numbers."""
        assert self._server is not None, "bind() first"
        registry = self._prom.CollectorRegistry(auto_describe=False)
        registry.register(IngestCollector(consumer))
        self._server.set_app(self._prom.make_wsgi_app(registry))
        threading.Thread(
            target=self._server.serve_forever, args=(POLL_S,), name="ingest-metrics", daemon=True
        ).start()
        self._serving = True
        logger.info("prometheus metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        """Stop serving and free the port."""
        server, self._server = self._server, None
        if server is not None:
            if self._serving:  # shutdown() waits for serve_forever, which may never have run
                server.shutdown()
            server.server_close()
