"""The drain loop: spool -> broker, QoS 1, delete only on PUBACK.

:class:`Bridge` is a plain state machine driven by :meth:`Bridge.step` with
the current monotonic time, so tests use a fake clock and a fake publisher.
:class:`BridgeThread` is the thin thread around it.

States: ``disconnected`` (waiting out the backoff), ``connecting`` (attempt
under way), ``connected`` (publishing). On every connection the bridge
forgets its leases and resends from the oldest unacknowledged row; rows leave
the spool only through :meth:`Spool.settle` (PUBACK < 0x80: delete, >= 0x80:
dead letter).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mqttspool.config import Settings
from mqttspool.counters import BROKER_CONNECTED, MESSAGES_PUBLISHED, Counters
from mqttspool.errors import SpoolCorruptError, SpoolError
from mqttspool.mqtt import (
    Acked,
    Connected,
    ConnectFailed,
    Disconnected,
    Event,
    Publisher,
    Will,
)
from mqttspool.reading import StoredReading, render_payload, render_topic
from mqttspool.spool import Rejection, Spool, read_stats_json
from mqttspool.timekeeping import Clock

logger = logging.getLogger(__name__)

SNAPSHOT_INTERVAL_S = 60.0
ACK_FLUSH_S = 0.05
IDLE_POLL_S = 0.25
FAILURE_LOG_INTERVAL_S = 30.0
PUBACK_FAILURE = 0x80


@dataclass(frozen=True)
class OutMessage:
    """A message that is not a spooled reading (status, snapshot, discovery, HA state)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Companion(Protocol):
    """Something that publishes alongside the readings (e.g. Home Assistant discovery)."""

    def on_connect(self) -> list[OutMessage]:
        """Messages to send right after every connect."""
        ...

    def on_reading(self, row: StoredReading, replay: bool) -> list[OutMessage]:
        """Messages to send with a reading (after it was handed to the broker)."""
        ...


def status_topic(prefix: str, device: str) -> str:
    """``{prefix}/{device}/status`` (retained online/offline)."""
    return f"{prefix}/{device}/status"


def spool_topic(prefix: str, device: str) -> str:
    """``{prefix}/{device}/spool`` (retained backlog snapshot)."""
    return f"{prefix}/{device}/spool"


def will_for(settings: Settings) -> Will:
    """Retained ``offline`` on the status topic."""
    return Will(status_topic(settings.topics.prefix, settings.device.id), b"offline")


class Backoff:
    """Exponential backoff with full jitter between ``low`` and ``high`` seconds."""

    def __init__(self, low: float, high: float, rng: random.Random | None = None) -> None:
        self.low, self.high = low, high
        self._rng = rng or random.Random()
        self._attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; grows ×2 per failure up to ``high``."""
        cap = min(self.high, self.low * (2**self._attempt))
        self._attempt += 1
        return self._rng.uniform(self.low, max(self.low, cap))

    def reset(self) -> None:
        """After a successful connection."""
        self._attempt = 0


class TokenBucket:
    """``rate`` tokens per second, bursts up to ``rate`` (0 = unlimited)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._at: float | None = None

    def take(self, wanted: int, now: float) -> int:
        """How many of ``wanted`` messages may go now."""
        if self.rate <= 0:
            return wanted
        if self._at is not None:
            self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted

    def wait_for_one(self) -> float:
        """Seconds until one token is available."""
        if self.rate <= 0 or self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) / self.rate


@dataclass
class _Connection:
    generation: int
    started: float
    connected: bool = False
    window: int = 0
    inflight: dict[int, int] = field(default_factory=dict)  # mid -> seq
    control_mids: set[int] = field(default_factory=set)


class LeaseCursor:
    """What the bridge has taken from the spool since the last (re)connect.

    Leases live in memory only: :meth:`release` (after a disconnect, or when
    the spool looks drained so requeued rows behind the cursor are found)
    makes every row still in the spool leasable again. With ``live_first``
    the rows that arrive after the first lease go out before the backlog that
    was already there, and both are read oldest first.
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.release()

    def release(self) -> None:
        """Forget every lease: the next :meth:`take` starts again at the oldest row."""
        self._cursor = 0
        self._live_cursor = 0
        self._backlog_end: int | None = None
        self._live_done = False

    def take(self, n: int, live_first: bool = False) -> list[StoredReading]:
        """Up to ``n`` rows not yet leased, oldest first (or newly arrived first)."""
        if n <= 0:
            return []
        if live_first and not self._live_done:
            return self._take_live_first(n)
        rows = self.spool.rows_after(self._cursor, n)
        if rows:
            self._cursor = rows[-1].seq
        return rows

    def _take_live_first(self, n: int) -> list[StoredReading]:
        if self._backlog_end is None:
            self._backlog_end = self.spool.newest_seq()
            self._live_cursor = self._backlog_end
        live = self.spool.rows_after(self._live_cursor, n)
        if live:
            self._live_cursor = live[-1].seq
        backlog = self.spool.rows_after(self._cursor, n - len(live), through=self._backlog_end)
        if backlog:
            self._cursor = backlog[-1].seq
        elif len(live) < n:
            # Backlog exhausted: from now on one cursor, in seq order.
            self._cursor, self._live_done = self._live_cursor, True
        return live + backlog


class Bridge:
    """Moves spooled readings to the broker; one :meth:`step` at a time."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        publisher: Publisher,
        clock: Clock,
        counters: Counters | None = None,
        companions: Sequence[Companion] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.bridge
        self.spool = spool
        self.leases = LeaseCursor(spool)
        self.publisher = publisher
        self.clock = clock
        self.counters = counters or Counters()
        self.companions = list(companions)
        self.prefix = settings.topics.prefix
        self.device = settings.device.id
        self.backoff = Backoff(self.cfg.reconnect_min, self.cfg.reconnect_max, rng)
        self.bucket = TokenBucket(self.cfg.max_rate)
        self.conn: _Connection | None = None
        self.next_attempt = 0.0
        self.stopping = False
        self.drained = False  # last lease found nothing and nothing is in flight
        self.published_total = 0
        self.rejected_total = 0
        self._acked: list[int] = []
        self._rejected: list[Rejection] = []
        self._first_pending_at: float | None = None
        self._next_snapshot = 0.0
        self._last_failure_log = -1e18
        self._failures_unlogged = 0
        self._last_failure = ""
        self._last_settle_log = -1e18
        self._ack_batch = max(32, min(256, self.cfg.max_inflight // 2))

    # ------------------------------------------------------------- queries

    @property
    def connected(self) -> bool:
        """True while a connection is established."""
        return self.conn is not None and self.conn.connected

    @property
    def inflight(self) -> int:
        """Readings published and not yet acknowledged."""
        return 0 if self.conn is None else len(self.conn.inflight)

    @property
    def unsettled(self) -> int:
        """Readings in flight plus acknowledged ones not yet deleted (the window's load)."""
        return self.inflight + len(self._acked) + len(self._rejected)

    # ---------------------------------------------------------------- step

    def step(self, now: float) -> float:
        """Do one round of work; returns how long the caller may wait before the next."""
        for event in self.publisher.events():
            self._handle(event, now)
        if self.conn is None:
            if not self.stopping and now >= self.next_attempt:
                self._start_attempt(now)
            return max(0.0, self.next_attempt - now) if self.conn is None else IDLE_POLL_S
        if not self.conn.connected:
            if now - self.conn.started > _attempt_timeout(self.settings):
                self._attempt_failed(now, "no CONNACK within the connect timeout")
            return IDLE_POLL_S
        self._maybe_settle(now)
        if now >= self._next_snapshot:
            self._publish_snapshot(now)
        if not self.stopping:
            self._fill_window(now)
        return self._next_wait(now)

    def _next_wait(self, now: float) -> float:
        if self._acked or self._rejected:
            return ACK_FLUSH_S
        if self.bucket.wait_for_one() > 0:
            return self.bucket.wait_for_one()
        return IDLE_POLL_S

    # -------------------------------------------------------------- events

    def _handle(self, event: Event, now: float) -> None:
        conn = self.conn
        if conn is None or event.generation != conn.generation:
            return  # a late event of a client already thrown away
        if isinstance(event, Acked):
            self._on_ack(conn, event, now)
        elif isinstance(event, Connected):
            self._on_connected(conn, event, now)
        elif isinstance(event, ConnectFailed):
            self._attempt_failed(now, event.reason)
        elif isinstance(event, Disconnected):
            if conn.connected:
                self._on_disconnected(event, now)
            else:
                self._attempt_failed(now, f"connection closed before CONNACK ({event.reason})")

    def _on_ack(self, conn: _Connection, event: Acked, now: float) -> None:
        seq = conn.inflight.pop(event.mid, None)
        if seq is None:
            conn.control_mids.discard(event.mid)
            return
        if self._first_pending_at is None:
            self._first_pending_at = now
        if event.reason_code < PUBACK_FAILURE:
            self._acked.append(seq)
        else:
            self._rejected.append(Rejection(seq, event.reason_code, event.reason))

    def _on_connected(self, conn: _Connection, event: Connected, now: float) -> None:
        conn.connected = True
        receive_max = event.receive_maximum
        conn.window = min(self.cfg.max_inflight, receive_max or self.cfg.max_inflight)
        self.backoff.reset()
        self.leases.release()
        self.drained = False
        self.counters.set(BROKER_CONNECTED, 1)
        limit = "" if receive_max is None else f", broker Receive Maximum {receive_max}"
        logger.info(
            "connected to broker %s (MQTT %s); window %d (bridge.max_inflight %d%s)",
            self.publisher.broker,
            self.settings.broker.protocol,
            conn.window,
            self.cfg.max_inflight,
            limit,
        )
        if self._failures_unlogged:
            self._failures_unlogged = 0
        self._send_control(OutMessage(status_topic(self.prefix, self.device), b"online"))
        for companion in self.companions:
            for msg in companion.on_connect():
                self._send_control(msg)
        self._publish_snapshot(now)

    def _on_disconnected(self, event: Disconnected, now: float) -> None:
        self._settle()
        lost = self.inflight
        logger.warning(
            "lost connection to broker %s: %s; %d reading(s) in flight stay spooled and will be"
            " resent",
            self.publisher.broker,
            event.reason,
            lost,
        )
        self._drop_connection(now, self.backoff.next_delay())

    def _attempt_failed(self, now: float, reason: str) -> None:
        delay = self.backoff.next_delay()
        self._log_failure(now, reason, delay)
        self._drop_connection(now, delay)

    def _drop_connection(self, now: float, delay: float) -> None:
        self.publisher.close()
        self.conn = None
        self.leases.release()
        self.counters.set(BROKER_CONNECTED, 0)
        self.next_attempt = now + delay

    def _log_failure(self, now: float, reason: str, delay: float) -> None:
        self._failures_unlogged += 1
        kind = _failure_kind(reason)
        if kind == self._last_failure and now - self._last_failure_log < FAILURE_LOG_INTERVAL_S:
            return
        depth = self.spool.depth()
        extra = f" ({self._failures_unlogged} attempts)" if self._failures_unlogged > 1 else ""
        logger.warning(
            "broker %s unreachable: %s%s; %d reading(s) spooled; retrying in %.1f s",
            self.publisher.broker,
            reason,
            extra,
            depth,
            delay,
        )
        self._last_failure, self._last_failure_log = kind, now
        self._failures_unlogged = 0

    def _start_attempt(self, now: float) -> None:
        gen = self.publisher.connect()
        self.conn = _Connection(generation=gen, started=now)

    # ------------------------------------------------------------- publish

    def _fill_window(self, now: float) -> None:
        conn = self.conn
        assert conn is not None
        room = conn.window - self.unsettled
        if room <= 0:
            return
        room = self.bucket.take(room, now)
        if room <= 0:
            return
        rows = self.leases.take(room, live_first=self.cfg.live_first)
        if not rows:
            if not conn.inflight and not self._acked and not self._rejected:
                self.drained = True
                self.leases.release()  # pick up rows requeued behind the cursor
            return
        self.drained = False
        now_us = self.clock.wall_us()
        live_us = int(self.cfg.live_window * 1_000_000)
        epoch = self.spool.epoch
        for row in rows:
            replay = now_us - row.ts_us > live_us
            topic = render_topic(self.prefix, row.device, row.sensor, row.metric)
            mid = self.publisher.publish(topic, render_payload(row, epoch, replay), 1, False)
            if mid is None:
                # paho lost the connection under us: stop now, resend after reconnect.
                self._on_disconnected(Disconnected(conn.generation, "publish refused"), now)
                return
            conn.inflight[mid] = row.seq
            for companion in self.companions:
                for msg in companion.on_reading(row, replay):
                    self._send_control(msg)

    def _send_control(self, msg: OutMessage) -> None:
        mid = self.publisher.publish(msg.topic, msg.payload, msg.qos, msg.retain)
        if mid is not None and self.conn is not None and msg.qos > 0:
            self.conn.control_mids.add(mid)

    def _publish_snapshot(self, now: float) -> None:
        self._next_snapshot = now + SNAPSHOT_INTERVAL_S
        doc = self.snapshot()
        self._send_control(
            OutMessage(
                spool_topic(self.prefix, self.device),
                json.dumps(doc, separators=(",", ":")).encode(),
            )
        )

    def snapshot(self) -> dict[str, object]:
        """The retained spool document (depth, oldest age, dead letters, drops)."""
        return read_stats_json(self.spool.stats(), self.device, self.clock.wall_us())

    # -------------------------------------------------------------- settle

    def _maybe_settle(self, now: float) -> None:
        if not self._acked and not self._rejected:
            return
        conn = self.conn
        pending = len(self._acked) + len(self._rejected)
        # A full window waits for deletes, but deleting a handful at a time would
        # cost a transaction per PUBACK: wait for a quarter of the window.
        window_full = (
            conn is not None
            and self.unsettled >= conn.window
            and pending >= max(1, min(self._ack_batch, conn.window // 4))
        )
        due = self._first_pending_at is not None and now - self._first_pending_at >= ACK_FLUSH_S
        if pending >= self._ack_batch or window_full or due:
            self._settle()

    def _settle(self) -> None:
        if not self._acked and not self._rejected:
            return
        acked, rejected = self._acked, self._rejected
        try:
            self.spool.settle(acked, rejected)
        except SpoolCorruptError:
            raise
        except SpoolError as exc:
            # e.g. disk full: keep the acks and retry; the window stays full meanwhile.
            self._log_settle_failure(exc)
            return
        self._acked, self._rejected, self._first_pending_at = [], [], None
        self.published_total += len(acked)
        self.rejected_total += len(rejected)
        self.counters.inc(MESSAGES_PUBLISHED, n=len(acked))

    def _log_settle_failure(self, exc: SpoolError) -> None:
        now = time.monotonic()
        if now - self._last_settle_log >= FAILURE_LOG_INTERVAL_S:
            self._last_settle_log = now
            logger.error(
                "cannot delete %d acknowledged reading(s): %s; publishing pauses until it works",
                len(self._acked) + len(self._rejected),
                exc,
            )

    # ------------------------------------------------------------ shutdown

    def shutdown(
        self, timeout: float, now: Callable[[], float], wait: Callable[[float], None]
    ) -> int:
        """Stop publishing, wait up to ``timeout`` for in-flight acks, say ``offline``.

        Returns how many readings were still unacknowledged (they stay spooled).
        """
        self.stopping = True
        deadline = now() + timeout
        while self.connected and self.inflight and now() < deadline:
            self.step(now())
            wait(min(ACK_FLUSH_S, max(0.0, deadline - now())))
        for event in self.publisher.events():
            self._handle(event, now())
        self._settle()
        left = self.inflight
        if self.connected:
            self._say_offline(deadline, now, wait)
        self.publisher.close()
        self.conn = None
        self.counters.set(BROKER_CONNECTED, 0)
        return left

    def _say_offline(
        self, deadline: float, now: Callable[[], float], wait: Callable[[float], None]
    ) -> None:
        topic = status_topic(self.prefix, self.device)
        mid = self.publisher.publish(topic, b"offline", 1, True)
        if mid is None or self.conn is None:
            return
        self.conn.control_mids.add(mid)
        end = max(deadline, now() + 1.0)
        while mid in self.conn.control_mids and now() < end:
            wait(ACK_FLUSH_S)
            for event in self.publisher.events():
                if isinstance(event, Acked):
                    self.conn.control_mids.discard(event.mid)


def _failure_kind(reason: str) -> str:
    """Group failure texts so the log is rate-limited per kind, not per wording.

    A refused TCP connect shows up as "Connection reset by peer" or "connection
    closed before CONNACK" depending on timing; both are the same outage.
    """
    if reason.startswith("connection refused:"):
        return reason  # the broker said why (bad password, not authorized...)
    if reason.startswith("TLS"):
        return "tls"
    return "network"


def _attempt_timeout(settings: Settings) -> float:
    return max(10.0, float(settings.broker.keepalive))


class BridgeThread:
    """Runs :meth:`Bridge.step` in a thread until :meth:`stop`; then shuts down cleanly."""

    def __init__(self, bridge: Bridge, wake: Callable[[], None]) -> None:
        self.bridge = bridge
        self._wake = wake
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.left_unacked = 0
        self._thread = threading.Thread(target=self._run, name="bridge", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to finish (graceful shutdown follows in the thread)."""
        self._stop.set()
        self._wake()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread."""
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def _run(self) -> None:
        bridge = self.bridge
        try:
            while not self._stop.is_set():
                delay = bridge.step(time.monotonic())
                bridge.publisher.wait(min(delay, IDLE_POLL_S))
            self.left_unacked = bridge.shutdown(
                bridge.cfg.shutdown_timeout, time.monotonic, bridge.publisher.wait
            )
        except SpoolCorruptError as exc:
            self.error = exc
            logger.error("bridge stopped: %s", exc)
            bridge.publisher.close()
        except BaseException as exc:
            self.error = exc
            logger.exception("bridge stopped by an unexpected error")
            bridge.publisher.close()
        finally:
            bridge.spool.close()  # this thread's SQLite connection
