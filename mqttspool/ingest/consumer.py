"""The MQTT side of ``mqttspool ingest``: gather a batch, store it, then acknowledge it.

A batch is up to ``ingest.batch_max`` messages, or what arrived within
``ingest.batch_linger`` seconds. It is written in one transaction, and only
after the commit are its messages acknowledged to the broker (paho manual
ack). A crash anywhere before that leaves them unacknowledged in the
persistent session, so the broker resends them and the ``UNIQUE(id)``
insert drops the copies that did make it: nothing lost, nothing twice.

No message can stop the loop. What the decoder refuses is quarantined; when
the database refuses a batch (:class:`StoreRefusedError`: a value out of range,
NUL in text...), each message is written alone and the ones it still
refuses are quarantined with the database's reason; all of them are
acknowledged. When the database is unreachable (:class:`StoreError`) the
batch stays unacknowledged and is retried with backoff; ``on_db_state``
hears about it (``ingest`` publishes its STATE offline meanwhile).
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mqttspool.ingest.completeness import EpochReport, completeness
from mqttspool.ingest.decode import Decoder
from mqttspool.ingest.store import Store, StoreError, StoreRefusedError, Undecodable, WriteBatch
from mqttspool.mqtt import Delivery
from mqttspool.runner import ErrorPolicy, Runner, StopRequest, WakingQueue

logger = logging.getLogger(__name__)
RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0  # while the database is unreachable


class DeliverySource(Protocol):
    """What the consumer needs from the subscriber (:class:`~mqttspool.mqtt.AckingSubscriber`)."""

    messages: WakingQueue[Delivery]  # its on_put wakes the consumer's loop

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge one delivery to the broker."""
        ...


@dataclass
class IngestTotals:
    """Counts since the process started (for the status line)."""

    messages: int = 0
    new_rows: int = 0
    duplicates: int = 0
    undecodable: int = 0  # quarantined: refused by the decoder or by the database


class IngestConsumer:
    """The loop of ``mqttspool ingest``; :meth:`step` is one batch."""

    def __init__(
        self,
        source: DeliverySource,
        store: Store,
        decoder: Decoder,
        batch_max: int,
        batch_linger: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.store = store
        self.decoder = decoder
        self.batch_max = batch_max
        self.batch_linger = batch_linger
        self.clock = clock
        self.totals = IngestTotals()
        self.reports: list[EpochReport] = []  # refreshed by refresh_reports (metrics reads it)
        self.pending: list[Delivery] = []  # gathered, not yet stored (the database was down)
        self.db_ok: bool | None = None  # None: not written yet
        self.retry_s = RETRY_MIN_S
        self.on_db_state: Callable[[bool], None] = lambda ok: None

    def gather(self, wait: float) -> list[Delivery]:
        """Up to ``batch_max`` deliveries: wait ``wait`` s for the first, then linger."""
        try:
            got = [self.source.messages.get(timeout=wait)]
        except queue.Empty:
            return []
        deadline = self.clock() + self.batch_linger
        while len(got) < self.batch_max:
            left = deadline - self.clock()
            try:
                got.append(self.source.messages.get(timeout=max(left, 0.0)))
            except queue.Empty:
                break
        return got

    def step(self, wait: float = 0.5) -> int:
        """Gather, store in one transaction, acknowledge; returns messages handled.

        0 with :attr:`db_ok` False: the database is unreachable, the messages
        wait in :attr:`pending` (unacknowledged) for the next step.
        """
        deliveries = self.pending or self.gather(wait)
        if not deliveries:
            return 0
        self.pending = deliveries
        logger.debug("ingest: storing %d message(s)", len(deliveries))
        try:
            batch, new = self._store(deliveries)
        except StoreError as exc:
            self._database(False, exc)
            return 0
        self.pending = []
        for d in deliveries:
            self.source.ack(d)
        self._database(True, None)
        self._count(len(deliveries), batch, new)
        return len(deliveries)

    def _store(self, deliveries: list[Delivery]) -> tuple[WriteBatch, int]:
        batch = WriteBatch()
        for d in deliveries:
            self.decoder.add(batch, d.topic, d.payload)
        try:
            return batch, self.store.write(batch)
        except StoreRefusedError as exc:
            logger.warning("ingest: %s; writing the %d message(s) one by one", exc, len(deliveries))
        done, new = WriteBatch(), 0
        for d in deliveries:
            one = WriteBatch()
            self.decoder.add(one, d.topic, d.payload)
            try:
                new += self.store.write(one)
            except StoreRefusedError as exc:
                reason = f"refused by the database: {exc.message}"
                one = WriteBatch(undecodable=[Undecodable(d.topic, reason, d.payload)])
                self.store.write(one)
            done.rows.extend(one.rows)
            done.undecodable.extend(one.undecodable)
        return done, new

    def _database(self, ok: bool, exc: StoreError | None) -> None:
        if exc is not None:
            logger.error("ingest: %s; retrying in %.0f s (nothing acknowledged)", exc, self.retry_s)
        if ok != self.db_ok:
            self.db_ok = ok
            self.on_db_state(ok)
        self.retry_s = RETRY_MIN_S if ok else min(self.retry_s * 2, RETRY_MAX_S)

    def _count(self, messages: int, batch: WriteBatch, new: int) -> None:
        t = self.totals
        t.messages += messages
        t.new_rows += new
        t.duplicates += len(batch.rows) - new
        t.undecodable += len(batch.undecodable)
        for bad in batch.undecodable:
            logger.warning("ingest: quarantined a message on %.200s: %s", bad.topic, bad.reason)

    def refresh_reports(self) -> list[EpochReport]:
        """Recompute completeness from the store (status line, metrics); on a
        database failure the previous reports stay (the next refresh retries)."""
        try:
            self.reports = completeness(self.store.state())
        except StoreError as exc:
            logger.warning("ingest: completeness not refreshed: %s", exc)
        return self.reports

    def status_line(self) -> str:
        """One line for the log: totals since start and unexplained loss."""
        t = self.totals
        reports = self.refresh_reports()
        unexplained = sum(r.unexplained for r in reports)
        return (
            f"ingest: {t.messages} message(s), {t.new_rows} new reading(s),"
            f" {t.duplicates} duplicate(s), {t.undecodable} quarantined;"
            f" {len(reports)} epoch(s), {unexplained} unexplained missing reading(s)"
        )

    def run(self, stop: StopRequest, status_interval: float) -> None:
        """Step until ``stop`` is set, logging a status line every ``status_interval`` s.

        Between batches it sleeps until a message arrives (the source's queue wakes
        it), the status line or the database retry is due, or ``stop`` is set.
        """
        self.refresh_reports()  # the metrics show the stored state from the start
        loop = _Loop(self, status_interval)
        runner = Runner("ingest", loop.step, ErrorPolicy(propagate=True), stop=stop)
        self.source.messages.on_put = runner.wake
        try:
            runner.run()
        finally:
            self.source.messages.on_put = lambda: None
        logger.info("%s", self.status_line())


class _Loop:
    """The consumer's step for the runner: one batch, the status line, the retry timer."""

    def __init__(self, consumer: IngestConsumer, status_interval: float) -> None:
        self.consumer = consumer
        self.status_interval = status_interval
        self.next_status = consumer.clock() + status_interval
        self.retry_at = 0.0

    def step(self, now: float) -> float:
        """Store what arrived (unless a database retry is not due yet); seconds to sleep."""
        consumer, clock = self.consumer, self.consumer.clock
        handled = 0
        if clock() >= self.retry_at:  # a message arriving meanwhile does not hurry a retry
            handled = consumer.step(wait=0.0)
            if consumer.db_ok is False:
                self.retry_at = clock() + consumer.retry_s
        if clock() >= self.next_status:
            self.next_status = clock() + self.status_interval
            logger.info("%s", consumer.status_line())
        if handled:
            return 0.0  # more may be queued
        due = [self.next_status]
        if consumer.db_ok is False:
            due.append(self.retry_at)
        return max(0.0, min(due) - clock())
