"""``mqttspool ingest [--db URL] [--group G] [--report [--json]]``.

Exit codes: 0 clean stop (SIGTERM/SIGINT) or a report without unexplained
gaps; 1 the database failed, or the report shows unexplained gaps; 2
configuration (including a PostgreSQL URL without the ``postgres`` extra).
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from mqttspool.errors import ConfigError

if TYPE_CHECKING:
    from mqttspool.config import Settings
    from mqttspool.ingest.metrics import IngestMetricsServer
    from mqttspool.ingest.store import SqlStore, StoredState
    from mqttspool.mqtt import AckingSubscriber

Handler = Callable[[argparse.Namespace, "Settings"], int]
Add = Callable[[str, Handler, str], argparse.ArgumentParser]
logger = logging.getLogger(__name__)


def register(add: Add) -> None:
    """Add ``ingest`` to the parser."""
    p = add("ingest", cmd_ingest, "reference consumer: store every reading once in a database")
    p.add_argument("--db", default=None, metavar="URL", help="SQLite path or postgresql:// URL")
    p.add_argument("--group", default=None, metavar="G", help="shared-subscription group")
    p.add_argument("--report", action="store_true", help="print the completeness table")
    p.add_argument("--json", action="store_true", help="with --report: print JSON")


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Run the consumer until SIGTERM/SIGINT, or print the report.

    Every check (database URL and its extra, the metrics extra and port, the
    state topic) runs before anything is created: a mistake costs no file.
    """
    from mqttspool.ingest.store import check_db, open_store  # noqa: PLC0415

    if args.db is not None:
        settings.ingest.db = args.db
    if args.group is not None:
        settings.ingest.group = args.group
    check_db(settings.ingest.db)
    metrics = None if args.report else _preflight(settings)
    try:
        store = open_store(settings.ingest.db, settings.ingest.quarantine_max)
        try:
            if args.report:
                return _report(store.state(), args.json)
            return _consume(settings, store, metrics)
        finally:
            store.close()
    finally:
        if metrics is not None:
            metrics.stop()


def _preflight(settings: Settings) -> IngestMetricsServer | None:
    """Check the state topic, bind the metrics port (if enabled); raises ConfigError."""
    cfg, prefix = settings.ingest, settings.topics.prefix
    state_topic = cfg.resolved_state_topic()
    if state_topic.startswith(f"{prefix}/"):
        problem = f"{state_topic!r} lies under topics.prefix {prefix!r}; choose a topic outside it"
        raise ConfigError("ingest.state_topic", [("ingest.state_topic", problem)])
    if not cfg.metrics.enabled:
        return None
    from mqttspool.ingest.metrics import IngestMetricsServer  # noqa: PLC0415

    server = IngestMetricsServer(cfg.metrics.host, cfg.metrics.port)
    server.bind()
    return server


def _report(state: StoredState, as_json: bool) -> int:
    from mqttspool.ingest.completeness import completeness, format_report  # noqa: PLC0415

    reports = completeness(state)
    if as_json:
        print(json.dumps({"epochs": [r.as_json() for r in reports]}))
    else:
        print(format_report(reports))
    return 1 if any(r.unexplained for r in reports) else 0


def _consume(settings: Settings, store: SqlStore, metrics: IngestMetricsServer | None) -> int:
    from mqttspool.ingest.consumer import IngestConsumer  # noqa: PLC0415
    from mqttspool.ingest.decode import Decoder  # noqa: PLC0415
    from mqttspool.ingest.state import IngestState  # noqa: PLC0415
    from mqttspool.runner import Runner, StopRequest  # noqa: PLC0415

    cfg, prefix = settings.ingest, settings.topics.prefix
    sub = _subscriber(settings)
    state_topic = cfg.resolved_state_topic()
    state = IngestState(lambda payload, wait: sub.publish_retained(state_topic, payload, wait))
    consumer = IngestConsumer(sub, store, Decoder(prefix), cfg.batch_max, cfg.batch_linger)
    if state_topic:
        sub.on_subscribed = state.subscription
        consumer.on_db_state = state.database
    stop = StopRequest()  # wakes the consumer and the status relay at once
    # The subscriber's status lines are logged as they arrive (the relay sleeps until one).
    relay = Runner("ingest status relay", lambda now: _log_status(sub), stop=stop)
    sub.status.on_put = relay.wake
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if metrics is not None:
        metrics.serve(consumer)
    logger.info("ingest: writing to %s, group %s", store.name, cfg.group)
    sub.start()
    threading.Thread(target=relay.run, name="ingest-status", daemon=True).start()
    try:
        consumer.run(stop, cfg.status_interval)
    finally:
        stop.set()  # ends the relay too
        if state_topic:
            state.stop()
        sub.stop()
    return 0


def _subscriber(settings: Settings) -> AckingSubscriber:
    """The shared subscription (and the plain one for retained snapshots), with the will."""
    from mqttspool.ingest.state import OFFLINE  # noqa: PLC0415
    from mqttspool.mqtt import AckingSubscriber, Will, client_id_for  # noqa: PLC0415

    cfg, prefix = settings.ingest, settings.topics.prefix
    state_topic = cfg.resolved_state_topic()
    # Retained messages never reach a shared subscription, so the spool
    # snapshots (retained) come through a plain one on every ingest process.
    topics = [f"$share/{cfg.group}/{prefix}/#", f"{prefix}/+/spool"]
    will = Will(state_topic, OFFLINE) if state_topic else None
    # ingest.client_id, or one stable per group and host (its persistent session).
    client_id = client_id_for(cfg.client_id, "ingest", cfg.group, socket.gethostname())
    return AckingSubscriber(settings.broker, client_id, topics, cfg.session_expiry, will)


def _log_status(sub: AckingSubscriber) -> float:
    """Log every status line queued so far; nothing is due until the next one arrives."""
    from mqttspool.runner import MAX_WAIT_S  # noqa: PLC0415

    while True:
        try:
            logger.info("ingest: %s", sub.status.get_nowait())
        except queue.Empty:
            return MAX_WAIT_S
