"""The drain loop: spool -> broker, QoS 1, delete only on PUBACK.

:class:`Bridge` is a plain state machine driven by :meth:`Bridge.step` with
the current monotonic time, so tests use a fake clock and a fake publisher.
:class:`BridgeThread` is the thin thread around it.

States: ``disconnected`` (waiting out the backoff), ``connecting`` (attempt
under way), ``connected`` (publishing). On every connection the bridge
forgets its leases and resends from the oldest unacknowledged row; rows leave
the spool only through :meth:`Spool.settle` (PUBACK < 0x80: delete, >= 0x80:
dead letter).

Two bounds, kept apart. Flow control: every unacknowledged QoS 1 message --
a reading, a batch, a control message (status, spool snapshot, Home
Assistant) -- counts as one against the window ``min(bridge.max_inflight,
broker Receive Maximum)``; control messages wait in an outbox for room and go
before readings. Durability: readings in flight + acknowledged-not-deleted +
deleted-not-fsync'd never exceed ``bridge.max_resend`` (what one crash or
power cut may resend). Deletes commit without fsync; they are fsync'd when the
next readings would pass ``max_resend`` (and ``max_resend`` wins over the
window: a batch is cut to what fits) and at least every
``bridge.settle_interval`` while any are unsynced. When the oldest
unacknowledged message has waited ``bridge.ack_timeout`` the connection is
dropped and everything resent after reconnecting.

Payload modes (``bridge.payload``): ``reading`` sends one message per reading,
with MQTT v5 topic aliases when the broker grants them (:class:`TopicAliases`,
per connection). ``batch`` sends every reading in zlib batches
(:mod:`mqttspool.batch`) and ``mixed`` only the backlog (replay), live
readings one per message. A batch is one message against the window and
counts by its readings against ``bridge.max_resend``; one PUBACK settles all
its rows. Leased rows
wait in ``_pending`` until their batch is full, closed, holds backlog, or has
lingered ``bridge.batch_linger`` seconds.

Idle costs nothing: :meth:`Bridge.step` returns the time until its next timer
is due (reconnect backoff, connect timeout, snapshot, settle of acknowledged
rows, ack timeout, token bucket) and queries the spool only when rows may be
there (:class:`SpoolWatch`). :class:`BridgeThread` sleeps in the publisher's
``wait`` until then, or until a paho event or a commit of this process (the
spool's ``appended`` signal) wakes it; commits of other processes are seen through
``PRAGMA data_version`` every ``VERSION_CHECK_S``.

Failures arrive typed (:class:`~mqttspool.mqtt.FailureKind`); every kind is
retried with backoff, configuration kinds are logged as errors with a hint,
and every repetitive line goes through one :class:`LogThrottle` per kind.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mqttspool.batch import CONTENT_TYPE, ENCODING_PROPERTY, batch_topic, encode_within
from mqttspool.config import Settings
from mqttspool.counters import BROKER_CONNECTED, MESSAGES_PUBLISHED, READINGS_PAUSED, Counters
from mqttspool.errors import SpoolCorruptError, SpoolError, SpoolGoneError
from mqttspool.gate import ConsumerGate
from mqttspool.logthrottle import LogThrottle
from mqttspool.mqtt import (
    Acked,
    Connected,
    ConnectFailed,
    ConsumerState,
    Disconnected,
    Event,
    FailureKind,
    Publisher,
    PublishProperties,
    Will,
    client_id_for,
)
from mqttspool.reading import StoredReading, render_payload, render_topic
from mqttspool.spool import Rejection, Spool, read_stats_json
from mqttspool.timekeeping import Clock

logger = logging.getLogger(__name__)

SNAPSHOT_INTERVAL_S = 60.0
ACK_FLUSH_S = 0.05  # how long acknowledged rows wait to be deleted in one batch
SETTLE_DELAY_S = 5.0  # the same in the daemon (BridgeThread): fewer, larger deletes
VERSION_CHECK_S = 1.0  # an idle bridge looks for rows committed by other processes this often
MAX_WAIT_S = SNAPSHOT_INTERVAL_S  # no step sleeps longer than this
FAILURE_LOG_INTERVAL_S = 30.0
PUBACK_FAILURE = 0x80
FLAPPING_HINT_COUNT = 3  # disconnects per log interval that suggest a client id clash
MAX_DOUBLINGS = 64  # 2**64 × reconnect_min is beyond any sane reconnect_max


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

    def on_reading(self, row: StoredReading, replay: bool, now_us: int) -> list[OutMessage]:
        """Messages to send with a reading (after it was handed to the broker);
        ``now_us`` is the wall clock at that moment."""
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
        # Stop doubling once the cap is reached: ``low * 2**attempt`` overflows a float
        # after ~1025 failures, i.e. an outage of a few hours must not crash the bridge.
        if cap < self.high and self._attempt < MAX_DOUBLINGS:
            self._attempt += 1
        return self._rng.uniform(self.low, max(self.low, cap))

    def reset(self) -> None:
        """After a successful connection."""
        self._attempt = 0


class TokenBucket:
    """``rate`` tokens per second, bursts up to ``max(rate, 1)`` (0 = unlimited).

    The burst is at least one token: with a rate below 1/s a burst of ``rate``
    would never hold the whole token a message needs.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._tokens = self.burst
        self._at: float | None = None

    def take(self, wanted: int, now: float) -> int:
        """How many of ``wanted`` messages may go now."""
        if self.rate <= 0:
            return wanted
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
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
class _DeadLetterTally:
    """Readings the broker rejected with one reason code: how many, first and last seq."""

    reason: str
    count: int = 0
    first_seq: int = 0
    last_seq: int = 0

    def add(self, rejection: Rejection) -> None:
        """Count one more rejection."""
        if not self.count:
            self.first_seq = rejection.seq
        self.count += 1
        self.last_seq = rejection.seq

    def describe(self, code: int) -> str:
        """``N reading(s) with reason 0xNN text (seq a..b)``."""
        seqs = (
            f"seq {self.first_seq}"
            if self.count == 1
            else f"seqs {self.first_seq}..{self.last_seq}"
        )
        return f"{self.count} reading(s) with reason 0x{code:02X} {self.reason} ({seqs})"


@dataclass
class _DeadLetterTallies:
    """Dead letters by reason code: since the last log line, and since start."""

    unlogged: dict[int, _DeadLetterTally] = field(default_factory=dict)
    total: dict[int, _DeadLetterTally] = field(default_factory=dict)


class TopicAliases:
    """MQTT v5 topic aliases of one connection (reset on reconnect: a new instance).

    First come, first served: the first ``maximum`` topics keep their alias for
    the whole connection and later topics go out in full. Unlike LRU, a round
    robin over more streams than aliases never re-sends topic and alias together.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._aliases: dict[str, int] = {}

    def for_topic(self, topic: str) -> tuple[str, PublishProperties | None]:
        """What to publish for ``topic``: the topic and a new alias the first time,
        then an empty topic and the alias; the topic alone once aliases run out."""
        alias = self._aliases.get(topic)
        if alias is not None:
            return "", PublishProperties(topic_alias=alias)
        if len(self._aliases) >= self.maximum:
            return topic, None
        alias = self._aliases[topic] = len(self._aliases) + 1
        return topic, PublishProperties(topic_alias=alias)


BATCH_PROPERTIES = PublishProperties(CONTENT_TYPE, (ENCODING_PROPERTY,))


@dataclass
class _Connection:
    generation: int
    started: float
    connected: bool = False
    window: int = 0
    inflight: dict[int, int] = field(default_factory=dict)  # mid -> seq, readings only
    # Batch messages: mid -> the seqs they carry; ``batched`` counts those readings
    # (they count against bridge.max_resend).
    batches: dict[int, tuple[int, ...]] = field(default_factory=dict)
    batched: int = 0
    receive_max: int = 65535  # the broker's limit on unacknowledged messages (batches)
    aliases: TopicAliases = field(default_factory=lambda: TopicAliases(0))
    # mid -> when it was published, for EVERY unacknowledged QoS 1 message (readings and
    # control messages): the broker's Receive Maximum counts them all. Insertion order is
    # publish order, so the first entry is the oldest unacknowledged message.
    sent_at: dict[int, float] = field(default_factory=dict)


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


class SpoolWatch:
    """Whether the spool may hold rows the bridge has not leased, mostly without a query.

    After a lease that found fewer rows than asked, the spool is *exhausted*:
    the bridge leases again only when this process committed rows
    (``Spool.appended.count`` moved, no query) or ``PRAGMA data_version`` says
    another connection committed (``mqttspool enqueue``, ``dead-letters
    requeue``), which is checked at most every ``VERSION_CHECK_S``.
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.exhausted = False
        self.next_check = 0.0
        self._appends = spool.appended.count
        self._version: int | None = None

    def reset(self) -> None:
        """The leases were released: the next lease must look at the spool."""
        self.exhausted = False

    def may_have_rows(self, now: float) -> bool:
        """True when a lease may find something (the caller then leases and calls
        :meth:`leased`); False costs no query unless the version check is due."""
        appends = self.spool.appended.count
        if not self.exhausted or appends != self._appends:
            self._appends = appends  # taken before the lease: a later commit moves it again
            return True
        if now < self.next_check:
            return False
        self.next_check = now + VERSION_CHECK_S
        version, self._version = self._version, self.spool.data_version()
        return version != self._version

    def known_empty(self) -> bool:
        """True when the last lease found everything and this process committed nothing
        since (no query; rows of other processes are found by :meth:`may_have_rows`)."""
        return self.exhausted and self.spool.appended.count == self._appends

    def leased(self, asked: int, got: int) -> None:
        """Record a lease: fewer rows than asked means nothing more is there now."""
        self.exhausted = got < asked


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
        self.leases, self.watch = LeaseCursor(spool), SpoolWatch(spool)
        self.publisher = publisher
        self.clock = clock
        self.counters = counters or Counters()
        self.companions = list(companions)
        self.prefix, self.device = settings.topics.prefix, settings.device.id
        self._client_id = client_id_for(settings.broker, self.device)
        self.backoff = Backoff(self.cfg.reconnect_min, self.cfg.reconnect_max, rng)
        self.bucket = TokenBucket(self.cfg.max_rate)
        self.conn: _Connection | None = None
        # Control messages (status, snapshot, Home Assistant) waiting for window space.
        self._outbox: deque[OutMessage] = deque()
        self.next_attempt, self.stopping = 0.0, False
        self.drained = False  # last lease found nothing and nothing is in flight
        self.published_total = self.rejected_total = 0
        self._acked: list[int] = []
        self._rejected: list[Rejection] = []
        self._first_pending_at: float | None = None  # the oldest ack not yet settled
        self._next_snapshot, self.settle_delay = 0.0, ACK_FLUSH_S
        self._unsynced_since: float | None = None  # when the oldest unsynced delete committed
        self._now = 0.0  # the time of the current step, for the log throttle
        self._unacked_since: float | None = None
        # One line per kind of trouble per interval, carrying how often it happened.
        self._log_throttle = LogThrottle(FAILURE_LOG_INTERVAL_S, clock=lambda: self._now)
        # Deletes in transactions of up to a quarter of max_resend: few WAL frames per row.
        self._ack_batch = max(32, min(1000, self.cfg.max_resend // 4))
        self._dead = _DeadLetterTallies()
        self._pending: deque[tuple[StoredReading, float]] = deque()  # see _fill_with_batches
        self.gate = ConsumerGate.for_bridge(self.cfg)

    # ------------------------------------------------------------- queries

    @property
    def connected(self) -> bool:
        """True while a connection is established."""
        return self.conn is not None and self.conn.connected

    @property
    def inflight(self) -> int:
        """Readings published and not yet acknowledged (alone or in batches)."""
        return 0 if self.conn is None else len(self.conn.inflight) + self.conn.batched

    @property
    def unsettled(self) -> int:
        """Readings in flight plus acknowledged ones not yet deleted."""
        return self.inflight + len(self._acked) + len(self._rejected)

    @property
    def window_load(self) -> int:
        """Messages against the window: every unacknowledged QoS 1 message (a reading,
        a batch, a control message: one each)."""
        return 0 if self.conn is None else len(self.conn.sent_at)

    @property
    def resend_load(self) -> int:
        """Readings a crash or power cut now could make us resend: in flight (alone or in
        batches), acknowledged but not deleted, deleted in a commit not yet fsync'd."""
        return self.unsettled + self.spool.unsynced_deletes

    # ---------------------------------------------------------------- step

    def unacked_since(self) -> float | None:
        """When the oldest unacknowledged QoS 1 message was published (the ``now`` given
        to :meth:`step`, i.e. ``time.monotonic()`` in the daemon); None when nothing is
        in flight. Safe to call from another thread (e.g. the heartbeat)."""
        return self._unacked_since

    def step(self, now: float) -> float:
        """Do one round of work; returns how long the caller may wait before the next."""
        self._now = now
        delay = self._step(now)
        conn = self.conn
        self._unacked_since = next(iter(conn.sent_at.values()), None) if conn else None
        return delay

    def _step(self, now: float) -> float:
        for event in self.publisher.events():
            self._handle(event, now)
        self._sync_if_due(now)
        if self.conn is None:
            if not self.stopping and now >= self.next_attempt:
                self._start_attempt(now)
            return self._next_wait(now)
        if not self.conn.connected:
            if now - self.conn.started > _attempt_timeout(self.settings):
                self._attempt_failed(
                    now, FailureKind.TIMEOUT, "no CONNACK within the connect timeout"
                )
            return self._next_wait(now)
        if self._ack_overdue(self.conn, now):
            return self._next_wait(now)
        self._maybe_settle(now)
        if now >= self._next_snapshot:
            self._publish_snapshot(now)
        if not self.stopping:
            self._fill_window(now)
        return self._next_wait(now)

    def _next_wait(self, now: float) -> float:
        """Seconds until the next timer is due; events (PUBACK, CONNACK, a commit of
        this process) wake the caller earlier through the publisher's ``wait``."""
        conn = self.conn
        if conn is None:
            due = self.next_attempt
        elif not conn.connected:
            due = conn.started + _attempt_timeout(self.settings) + ACK_FLUSH_S
        else:
            due = min(self._connected_timers(conn, now))
        if self._unsynced_since is not None:
            # Not before ACK_FLUSH_S: an fsync that failed retries at that pace.
            due = min(due, max(self._unsynced_since + self.cfg.settle_interval, now + ACK_FLUSH_S))
        return min(MAX_WAIT_S, max(0.0, due - now))

    def _connected_timers(self, conn: _Connection, now: float) -> list[float]:
        """When the snapshot, the settle of acknowledged rows, the ack timeout, the
        token bucket or the look for new rows is due. A full window has no timer of
        its own: the PUBACKs that free it are events."""
        timers = [self._next_snapshot]
        if self._first_pending_at is not None:
            # Not before ACK_FLUSH_S: a settle that failed (disk full) retries at that pace.
            timers.append(max(self._first_pending_at + self.settle_delay, now + ACK_FLUSH_S))
        oldest = next(iter(conn.sent_at.values()), None)
        if oldest is not None:
            timers.append(oldest + self.cfg.ack_timeout + ACK_FLUSH_S)
        linger_end = self._pending[0][1] + self.cfg.batch_linger if self._pending else now
        if linger_end > now:  # a live batch lingering (once due, only a PUBACK unblocks it)
            timers.append(linger_end)
        if self.stopping or self.window_load >= conn.window:
            return timers
        token = now + self.bucket.wait_for_one()
        timers.append(max(self.watch.next_check, token) if self.watch.exhausted else token)
        return timers

    # -------------------------------------------------------------- events

    def _handle(self, event: Event, now: float) -> None:
        conn = self.conn
        if conn is None or event.generation != conn.generation:
            return  # a late event of a client already thrown away
        if isinstance(event, Acked):
            self._on_ack(conn, event, now)
        elif isinstance(event, ConsumerState):
            self.gate.on_consumer_state(event.online)
        elif isinstance(event, Connected):
            self._on_connected(conn, event, now)
        elif isinstance(event, ConnectFailed):
            self._attempt_failed(now, event.kind, event.reason)
        elif isinstance(event, Disconnected):
            if conn.connected:
                self._on_disconnected(event, now)
            else:
                reason = f"connection closed before CONNACK ({event.reason})"
                self._attempt_failed(now, event.kind, reason)

    def _on_ack(self, conn: _Connection, event: Acked, now: float) -> None:
        conn.sent_at.pop(event.mid, None)
        seq = conn.inflight.pop(event.mid, None)
        seqs = (seq,) if seq is not None else conn.batches.pop(event.mid, ())
        if not seqs:
            return  # a control message
        if seq is None:
            conn.batched -= len(seqs)
        if self.gate.keeps(event.reason_code, now):
            return  # nobody received it: the row stays spooled (bridge.require_subscribers)
        if self._first_pending_at is None:
            self._first_pending_at = now
        # One PUBACK settles every reading of a batch the same way.
        if event.reason_code < PUBACK_FAILURE:
            self._acked.extend(seqs)
        else:
            self._rejected.extend(Rejection(s, event.reason_code, event.reason) for s in seqs)

    def _on_connected(self, conn: _Connection, event: Connected, now: float) -> None:
        conn.connected = True
        receive_max = event.receive_maximum
        conn.window = min(self.cfg.max_inflight, receive_max or self.cfg.max_inflight)
        conn.receive_max = receive_max or 65535
        conn.aliases = TopicAliases(event.topic_alias_maximum)
        self.backoff.reset()
        self.leases.release()
        self._pending.clear()
        self.watch.reset()
        self.drained = False
        self.counters.set(BROKER_CONNECTED, 1)
        self.gate.on_connect()
        self._log_connected(conn, receive_max)
        # Connect messages go first; whatever the last connection left unsent follows.
        left_over = list(self._outbox)
        self._outbox.clear()
        self._send_control(OutMessage(status_topic(self.prefix, self.device), b"online"))
        for companion in self.companions:
            for msg in companion.on_connect():
                self._send_control(msg)
        self._publish_snapshot(now)
        self._outbox.extend(left_over)

    def _on_disconnected(self, event: Disconnected, now: float) -> None:
        self._settle(now)
        self._log_disconnect(event.kind, event.reason)
        self._drop_connection(now, self.backoff.next_delay())

    def _ack_overdue(self, conn: _Connection, now: float) -> bool:
        """A broker that stops acknowledging must not stall the bridge silently:
        after ``bridge.ack_timeout`` drop the connection and resend after reconnecting."""
        oldest = next(iter(conn.sent_at.values()), None)
        if oldest is None or now - oldest <= self.cfg.ack_timeout:
            return False
        self._settle(now)
        count = self._log_throttle.note("ack_timeout")
        if count:
            logger.warning(
                "broker %s has not acknowledged %d message(s) for %.1f s (bridge.ack_timeout"
                " %g s)%s: dropping the connection; the %d reading(s) among them stay spooled"
                " and will be resent after reconnecting",
                self.publisher.broker,
                len(conn.sent_at),
                now - oldest,
                self.cfg.ack_timeout,
                _times(count, "times"),
                self.inflight,
            )
        self._drop_connection(now, self.backoff.next_delay())
        return True

    def _attempt_failed(self, now: float, kind: FailureKind, reason: str) -> None:
        delay = self.backoff.next_delay()
        self._log_failure(kind, reason, delay)
        self._drop_connection(now, delay)

    def _drop_connection(self, now: float, delay: float) -> None:
        self.publisher.close()
        self.conn = None
        self.leases.release()
        self._pending.clear()  # leased, never sent: leased again after reconnecting
        self.counters.set(BROKER_CONNECTED, 0)
        self.next_attempt = now + delay

    # ----------------------------------------------------------------- log

    def _log_connected(self, conn: _Connection, receive_max: int | None) -> None:
        count = self._log_throttle.note("connected")
        if not count:
            return  # a flapping link: the disconnect lines carry the counts
        limit = "" if receive_max is None else f", broker Receive Maximum {receive_max}"
        logger.info(
            "connected to broker %s (MQTT %s); window %d (bridge.max_inflight %d%s)%s",
            self.publisher.broker,
            self.settings.broker.protocol,
            conn.window,
            self.cfg.max_inflight,
            limit,
            _times(count, "connects"),
        )

    def _log_failure(self, kind: FailureKind, reason: str, delay: float) -> None:
        count = self._log_throttle.note(("unreachable", kind))
        if not count:
            return
        logger.log(
            logging.ERROR if kind.configuration else logging.WARNING,
            "broker %s unreachable: %s%s; %d reading(s) spooled; retrying in %.1f s%s",
            self.publisher.broker,
            reason,
            _times(count, "attempts"),
            self.spool.depth(),
            delay,
            _hint(kind),
        )

    def _log_disconnect(self, kind: FailureKind, reason: str) -> None:
        count = self._log_throttle.note(("lost", kind))
        if not count:
            return
        if kind is FailureKind.SESSION_TAKEN_OVER:
            self._log_session_taken_over(reason, count)
            return
        hint = _hint(kind)
        if kind is FailureKind.NETWORK and count >= FLAPPING_HINT_COUNT:
            # Brokers without DISCONNECT 0x8E (mosquitto 2.0) take a session over silently.
            hint = (
                f"; if another client uses client id {self._client_id!r} (two devices on one"
                " device.id?), give each its own broker.client_id"
            )
        logger.log(
            logging.ERROR if kind.configuration else logging.WARNING,
            "lost connection to broker %s: %s%s; %d reading(s) in flight stay spooled and will"
            " be resent%s",
            self.publisher.broker,
            reason,
            _times(count, "disconnects"),
            self.inflight,
            hint,
        )

    def _log_session_taken_over(self, reason: str, count: int) -> None:
        logger.error(
            "broker %s took the session of client id %r over (%s)%s: another client connected"
            " with the same client id, e.g. a second device left on the same device.id or a"
            " second mqttspool on this spool. Give every device its own broker.client_id (or"
            " device.id); until then the two keep disconnecting each other",
            self.publisher.broker,
            self._client_id,
            reason,
            _times(count, "times"),
        )

    def _start_attempt(self, now: float) -> None:
        gen = self.publisher.connect()
        self.conn = _Connection(generation=gen, started=now)

    # ------------------------------------------------------------- publish

    def _fill_window(self, now: float) -> None:
        conn = self.conn
        assert conn is not None
        if not self._flush_outbox(conn, now):
            return  # control messages first; readings wait for the window
        if self.cfg.payload == "reading":
            self._fill_with_readings(conn, now)
        else:
            self._fill_with_batches(conn, now)

    def _fill_with_readings(self, conn: _Connection, now: float) -> None:
        room = conn.window - self.window_load
        if room <= 0:
            return
        # No fsync to make room for rows that are not there.
        fits = self.cfg.max_resend - self.resend_load
        room = min(room, fits if self.watch.known_empty() else self._make_room(room, now))
        if room <= 0:
            return
        room = self._gated(room, len(conn.inflight), now)
        room = self.bucket.take(room, now) if room > 0 else 0
        if room <= 0:
            return
        now_us = self.clock.wall_us()
        for row in self._lease(conn, room, now):
            if not self._publish_reading(conn, row, self._is_replay(row, now_us), now, now_us):
                return

    def _lease(self, conn: _Connection, n: int, now: float) -> list[StoredReading]:
        """Up to ``n`` rows to send; no query while the spool is known to hold none."""
        rows: list[StoredReading] = []
        if self.watch.may_have_rows(now):
            rows = self.leases.take(n, live_first=self.cfg.live_first)
            self.watch.leased(n, len(rows))
        self.gate.on_leased(len(rows))
        if rows:
            self.drained = False
        elif not (conn.sent_at or self._acked or self._rejected or self._pending):
            self.drained = True
            self.leases.release()  # pick up rows requeued behind the cursor
        return rows

    def _is_replay(self, row: StoredReading, now_us: int) -> bool:
        return now_us - row.ts_us > int(self.cfg.live_window * 1_000_000)

    def _publish_reading(
        self, conn: _Connection, row: StoredReading, replay: bool, now: float, now_us: int
    ) -> bool:
        """One reading, one message (topic alias when the broker grants them)."""
        topic = render_topic(self.prefix, row.device, row.sensor, row.metric)
        topic, props = conn.aliases.for_topic(topic)
        payload = render_payload(row, self.spool.epoch_of(row.seq), replay)
        mid = self.publisher.publish(topic, payload, 1, False, props)
        if mid is None:
            self._publish_refused(conn, now)
            return False
        conn.inflight[mid] = row.seq
        conn.sent_at[mid] = now
        self._tell_companions(row, replay, now_us)
        return True

    def _tell_companions(self, row: StoredReading, replay: bool, now_us: int) -> None:
        for companion in self.companions:
            for msg in companion.on_reading(row, replay, now_us):
                self._send_control(msg)

    def _fill_with_batches(self, conn: _Connection, now: float) -> None:
        """``batch``/``mixed``: lease up to the window, then send what is due.

        ``_pending`` holds rows leased but not yet sent, with when they were leased
        (a live batch lingers); it is cleared with the leases on every (re)connect.
        """
        room = self.cfg.max_resend - self.unsettled - len(self._pending)
        if room > 0:
            room = self._gated(room, self.unsettled + len(self._pending), now)
        if room > 0:
            self._pending.extend((row, now) for row in self._lease(conn, room, now))
        now_us = self.clock.wall_us()
        while self._pending and self._send_next(conn, now, now_us):
            pass

    def _send_next(self, conn: _Connection, now: float, now_us: int) -> bool:
        """Send the head of the pending rows: a live reading alone (``mixed``) or a batch."""
        head = self._pending[0][0]
        if self.cfg.payload == "mixed" and not self._is_replay(head, now_us):
            if self.window_load >= conn.window or self._make_room(1, now) < 1:
                return False
            if not self.bucket.take(1, now):
                return False
            self._pending.popleft()
            return self._publish_reading(conn, head, False, now, now_us)
        rows, replay = self._batch_run(now_us)
        if not self._batch_due(rows, replay, now) or self.window_load >= conn.window:
            return False
        room = self._make_room(len(rows), now)
        if room <= 0 or not self.bucket.take(1, now):
            return False
        return self._publish_batch(conn, rows[:room], replay[:room], now, now_us)

    def _batch_run(self, now_us: int) -> tuple[list[StoredReading], list[bool]]:
        """The pending rows that may share the head's batch: same device and epoch (a batch
        carries one of each), in order; in ``mixed`` only replays. At most
        batch_max_readings (and max_inflight) of them."""
        cap = min(self.cfg.batch_max_readings, self.cfg.max_resend)
        head, mixed, epoch_of = (
            self._pending[0][0],
            self.cfg.payload == "mixed",
            self.spool.epoch_of,
        )
        device, epoch = head.device, epoch_of(head.seq)
        rows: list[StoredReading] = []
        replay: list[bool] = []
        for row, _ in itertools.islice(self._pending, cap):
            flag = self._is_replay(row, now_us)
            if row.device != device or epoch_of(row.seq) != epoch or (mixed and not flag):
                break
            rows.append(row)
            replay.append(flag)
        return rows, replay

    def _batch_due(self, rows: list[StoredReading], replay: list[bool], now: float) -> bool:
        """Full, holding backlog (never waits), closed by a row that cannot join, or
        lingered long enough: a live batch waits at most bridge.batch_linger to fill."""
        full = len(rows) >= min(self.cfg.batch_max_readings, self.cfg.max_resend)
        closed = len(rows) < len(self._pending)
        lingered = now - self._pending[0][1] >= self.cfg.batch_linger
        return full or closed or any(replay) or lingered

    def _publish_batch(
        self,
        conn: _Connection,
        rows: list[StoredReading],
        replay: list[bool],
        now: float,
        now_us: int,
    ) -> bool:
        device = rows[0].device
        epoch = self.spool.epoch_of(rows[0].seq)
        n, payload = encode_within(rows, device, epoch, replay, self.cfg.batch_max_bytes)
        topic = batch_topic(self.prefix, device)
        mid = self.publisher.publish(topic, payload, 1, False, BATCH_PROPERTIES)
        if mid is None:
            self._publish_refused(conn, now)
            return False
        for _ in range(n):
            self._pending.popleft()
        conn.batches[mid] = tuple(row.seq for row in rows[:n])
        conn.batched += n
        conn.sent_at[mid] = now
        for row, flag in zip(rows[:n], replay[:n], strict=True):
            self._tell_companions(row, flag, now_us)
        return True

    def _gated(self, room: int, readings_in_flight: int, now: float) -> int:
        """``room`` as far as the consumer gate allows (see :mod:`mqttspool.gate`)."""
        allowance = self.gate.allowance(now, readings_in_flight)
        if allowance.release_leases:
            self.leases.release()  # rows kept on PUBACK 0x10 lie behind the cursor
            self.watch.reset()
        if self.gate.changed:
            self.gate.changed = False
            self.counters.set(READINGS_PAUSED, 1 if self.gate.paused else 0)
            self._publish_snapshot(now)  # the retained snapshot shows the paused state
        return room if allowance.readings is None else min(room, allowance.readings)

    def _publish_refused(self, conn: _Connection, now: float) -> None:
        # paho lost the connection under us: stop now, resend after reconnect.
        lost = Disconnected(conn.generation, FailureKind.NETWORK, "publish refused")
        self._on_disconnected(lost, now)

    def _send_control(self, msg: OutMessage) -> None:
        """Queue a control message; it goes out when the window has room for it.

        A retained message replaces a queued one on the same topic (only the latest
        counts), so a window that stays full for hours cannot grow the outbox.
        """
        if msg.retain and any(queued.topic == msg.topic for queued in self._outbox):
            self._outbox = deque(m for m in self._outbox if m.topic != msg.topic)
        self._outbox.append(msg)

    def _flush_outbox(self, conn: _Connection, now: float) -> bool:
        """Publish queued control messages while the window has room; True when all went."""
        while self._outbox:
            msg = self._outbox[0]
            if msg.qos > 0 and self.window_load >= conn.window:
                return False
            mid = self.publisher.publish(msg.topic, msg.payload, msg.qos, msg.retain)
            if mid is None:
                self._publish_refused(conn, now)
                return False
            self._outbox.popleft()
            if msg.qos > 0:
                conn.sent_at[mid] = now
        return True

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
        """The retained spool document (depth, oldest age, dead letters, drops, paused)."""
        doc = read_stats_json(self.spool.stats(), self.device, self.clock.wall_us())
        return {**doc, **self.gate.snapshot_fields()}

    # -------------------------------------------------------------- settle

    def _maybe_settle(self, now: float) -> None:
        pending = len(self._acked) + len(self._rejected)
        due = (
            self._first_pending_at is not None and now - self._first_pending_at >= self.settle_delay
        )
        if pending >= self._ack_batch or (pending and due):
            self._settle(now)

    def _sync_if_due(self, now: float) -> None:
        """Unsynced deletes are fsync'd at least every ``bridge.settle_interval``."""
        if not self.spool.unsynced_deletes:
            self._unsynced_since = None  # covered by an fsync'd commit (a round at FULL)
        elif self._unsynced_since is None:
            self._unsynced_since = now
        elif now - self._unsynced_since >= self.cfg.settle_interval:
            self._sync_deletes()

    def _make_room(self, wanted: int, now: float) -> int:
        """Readings that may go out now without passing ``bridge.max_resend``.

        When fewer than ``wanted`` fit and deletes could free room (acknowledged rows,
        unsynced deletes), delete and fsync now: one fsync per ~``max_resend`` readings
        in a backlog drain, never per window.
        """
        wanted = min(wanted, max(1, self.cfg.max_resend // 2))
        room = self.cfg.max_resend - self.resend_load
        if room >= wanted or not (self._acked or self._rejected or self.spool.unsynced_deletes):
            return max(0, room)
        if self._acked or self._rejected:
            self._settle(now, durable=True)
        else:
            self._sync_deletes()
        return max(0, self.cfg.max_resend - self.resend_load)

    def _settle(self, now: float, durable: bool = False) -> None:
        if not self._acked and not self._rejected:
            return
        acked, rejected = self._acked, self._rejected
        try:
            self.spool.settle(acked, rejected, durable=durable)
        except (SpoolCorruptError, SpoolGoneError):
            raise  # not retried here: the service salvages a corrupt spool, stops on a gone one
        except SpoolError as exc:
            # e.g. disk full: keep the acks and retry; the window stays full meanwhile.
            self._log_settle_failure(exc)
            return
        self._acked, self._rejected, self._first_pending_at = [], [], None
        if not durable and self._unsynced_since is None and self.spool.unsynced_deletes:
            self._unsynced_since = now
        self.published_total += len(acked)
        self.rejected_total += len(rejected)
        self.counters.inc(MESSAGES_PUBLISHED, n=len(acked))
        if rejected:
            self._log_dead_letters(rejected)

    def _sync_deletes(self) -> None:
        """Fsync every delete so far (``max_resend`` reached, or ``settle_interval`` up)."""
        try:
            self.spool.sync_deletes()
        except (SpoolCorruptError, SpoolGoneError):
            raise
        except SpoolError as exc:
            if self._log_throttle.note("sync"):
                logger.error("cannot fsync deleted readings: %s; publishing pauses", exc)
            return
        self._unsynced_since = None

    def _log_dead_letters(self, rejected: list[Rejection]) -> None:
        """One line per reason code per interval (an ACL can reject thousands a minute)."""
        for rej in rejected:
            for tallies in (self._dead.unlogged, self._dead.total):
                tallies.setdefault(rej.code, _DeadLetterTally(rej.reason)).add(rej)
        for code, n in Counter(rej.code for rej in rejected).items():
            if self._log_throttle.note(("dead_letter", code), n):
                self._log_dead_tally(code, self._dead.unlogged.pop(code), "")

    def _log_dead_tally(self, code: int, tally: _DeadLetterTally, scope: str) -> None:
        logger.warning(
            "broker %s rejected %s%s: moved to the dead-letter table (`mqttspool dead-letters"
            " list` shows them, `requeue` sends them again once the broker allows it)",
            self.publisher.broker,
            tally.describe(code),
            scope,
        )

    def log_dead_letter_summary(self) -> None:
        """At the end of a run: the total per reason code, if the broker rejected anything."""
        for code, tally in sorted(self._dead.total.items()):
            self._log_throttle.flush(("dead_letter", code))
            self._log_dead_tally(code, tally, " in total since start")
        self._dead.unlogged.clear()

    def _log_settle_failure(self, exc: SpoolError) -> None:
        count = self._log_throttle.note("settle")
        if count:
            logger.error(
                "cannot delete %d acknowledged reading(s): %s%s; publishing pauses until it works",
                len(self._acked) + len(self._rejected),
                exc,
                _times(count, "attempts"),
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
        self._settle(now())
        self.log_dead_letter_summary()
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
        conn = self.conn
        if conn is None:
            return
        # Receive Maximum bounds QoS 1 and 2 only: with the window still full, QoS 0
        # still leaves the retained status right (the will is not sent on a clean
        # disconnect, so saying nothing would leave dashboards showing `online`).
        qos = 1 if self.window_load < conn.window else 0
        topic = status_topic(self.prefix, self.device)
        mid = self.publisher.publish(topic, b"offline", qos, True)
        if mid is None:
            return
        conn.sent_at[mid] = now()
        end = max(deadline, now() + 1.0)
        while mid in conn.sent_at and now() < end:
            wait(ACK_FLUSH_S)
            for event in self.publisher.events():
                if isinstance(event, Acked):
                    conn.sent_at.pop(event.mid, None)


def _times(count: int, what: str) -> str:
    """`` (N what)`` for a throttled log line that stands for ``count`` events."""
    return f" ({count} {what})" if count > 1 else ""


def _hint(kind: FailureKind) -> str:
    return f"; {kind.hint}" if kind.hint else ""


def _attempt_timeout(settings: Settings) -> float:
    return max(10.0, float(settings.broker.keepalive))


class BridgeThread:
    """Runs :meth:`Bridge.step` in a thread until :meth:`stop`; then shuts down cleanly.

    Between steps it sleeps for the delay the step returned; ``wake`` (the
    publisher's) cuts the sleep short and is called by the spool after every
    commit of new rows in this process.
    """

    def __init__(self, bridge: Bridge, wake: Callable[[], None]) -> None:
        self.bridge = bridge
        # A long-running daemon deletes acknowledged rows in fewer, larger transactions:
        # each delete costs WAL frames, and rows acknowledged but not deleted still
        # count against the window, so a crash resends at most max_inflight of them.
        bridge.settle_delay = SETTLE_DELAY_S
        self._wake = wake
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.left_unacked = 0
        self._thread = threading.Thread(target=self._run, name="bridge", daemon=True)

    def start(self) -> None:
        """Start the thread; rows this process commits to the spool wake it."""
        self.bridge.spool.appended.subscribe(self._wake)
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
                bridge.publisher.wait(delay)
            self.left_unacked = bridge.shutdown(
                bridge.cfg.shutdown_timeout, time.monotonic, bridge.publisher.wait
            )
        except (SpoolCorruptError, SpoolGoneError) as exc:
            self.error = exc
            logger.error("bridge stopped: %s", exc)
            bridge.publisher.close()
        except BaseException as exc:
            self.error = exc
            logger.exception("bridge stopped by an unexpected error")
            bridge.publisher.close()
        finally:
            bridge.spool.appended.unsubscribe(self._wake)
            bridge.spool.close()  # this thread's SQLite connection
