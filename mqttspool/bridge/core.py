"""The bridge: :meth:`Bridge.step` coordinates the parts given to its constructor.

Parts (each its own module, each tested alone with a fake clock and a fake
publisher):

* :class:`~.connection.Link` -- the connection, its attempts and timers;
  a :class:`~.connection.Session` per connection holds its
  :class:`~.window.Window` (messages in flight, one ``load()``);
* :class:`~.settler.Settler` -- PUBACKs -> deletes -> fsync policy, the
  ``bridge.max_resend`` bound;
* :class:`~.outbox.Outbox` -- control messages (status, snapshot, Home
  Assistant);
* a sender per payload mode (:mod:`.senders`);
* :class:`~.leases.RowSource` -- leases behind the consumer gate;
* :class:`~.deadletters.DeadLetterLog`.

:func:`build_bridge` wires them from the settings.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mqttspool.config import Settings
from mqttspool.counters import BROKER_CONNECTED, READINGS_PAUSED, Counters
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
)
from mqttspool.spool import Spool, read_stats_json
from mqttspool.timekeeping import Clock

from .connection import Link, Session
from .deadletters import DeadLetterLog
from .leases import RowSource, SpoolWatch
from .outbox import Companion, Outbox
from .senders import BatchSender, ReadingSender, SendContext, Sender, TokenBucket
from .settler import Settler

ACK_FLUSH_S = 0.05  # how long acknowledged rows wait to be deleted in one batch
SETTLE_DELAY_S = 5.0  # the same in the daemon: fewer, larger deletes
MAX_WAIT_S = 60.0  # no step sleeps longer than this
LAZY_ACK_S = SETTLE_DELAY_S  # with lazy acks, PUBACKs in flight are handled at least this often
LAZY_SETTLE_SLACK_S = 2.0  # with lazy acks, a settle waits this long for another wake-up
FAILURE_LOG_INTERVAL_S = 30.0


@dataclass
class Parts:
    """What a :class:`Bridge` coordinates (see :func:`build_bridge`)."""

    link: Link
    source: RowSource
    settler: Settler
    outbox: Outbox
    sender: Sender
    dead_letters: DeadLetterLog
    gate: ConsumerGate
    counters: Counters
    throttle: LogThrottle


class Bridge:
    """Moves spooled readings to the broker; one :meth:`step` at a time."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        clock: Clock,
        parts: Parts,
        *,
        lazy_acks: bool = False,
    ) -> None:
        self.settings, self.cfg, self.spool, self.clock = settings, settings.bridge, spool, clock
        self.prefix, self.device = settings.topics.prefix, settings.device.id
        self.parts = parts
        self.link, self.source, self.settler = parts.link, parts.source, parts.settler
        self.outbox, self.sender, self.gate = parts.outbox, parts.sender, parts.gate
        self.counters = parts.counters
        self.stopping = False
        self.drained = False  # last lease found nothing and nothing is in flight
        self.now = 0.0  # the time of the current step, for the log throttle
        self.lazy_acks = lazy_acks  # PUBACKs wake the step only when something waits on them
        self._unacked_since: float | None = None

    # ------------------------------------------------------------- queries

    @property
    def last_failure(self) -> str:
        """Why the last connection attempt failed ("" if none did); drain reports it."""
        return self.link.last_failure

    @property
    def publisher(self) -> Publisher:
        """The publisher the link connects with."""
        return self.link.publisher

    @property
    def connected(self) -> bool:
        """True while a connection is established."""
        return self.link.connected

    @property
    def next_attempt(self) -> float:
        """When the next connection attempt starts (while disconnected)."""
        return self.link.next_attempt

    @property
    def watch(self) -> SpoolWatch:
        """Whether the spool may hold rows not leased yet."""
        return self.source.watch

    @property
    def settle_delay(self) -> float:
        """How long acknowledged rows wait to be deleted together."""
        return self.settler.settle_delay

    @property
    def inflight(self) -> int:
        """Readings published and not yet acknowledged (alone or in batches)."""
        session = self.link.session
        return 0 if session is None else session.window.readings

    @property
    def unsettled(self) -> int:
        """Readings in flight plus acknowledged ones not yet deleted."""
        return self.inflight + self.settler.pending

    @property
    def window_load(self) -> int:
        """Messages in flight (readings, batches, control messages: one each)."""
        session = self.link.session
        return 0 if session is None else session.window.load()

    @property
    def resend_load(self) -> int:
        """Readings a crash or power cut now could make us resend (<= ``max_resend``)."""
        return self.settler.load(self.inflight)

    @property
    def published_total(self) -> int:
        """Readings acknowledged and deleted since start."""
        return self.settler.published_total

    @property
    def rejected_total(self) -> int:
        """Readings the broker rejected (dead-lettered) since start."""
        return self.settler.rejected_total

    def unacked_since(self) -> float | None:
        """When the oldest unacknowledged QoS 1 message was published (the ``now`` given
        to :meth:`step`); None when nothing is in flight. Safe from another thread."""
        return self._unacked_since

    def snapshot(self) -> dict[str, object]:
        """The retained spool document (depth, oldest age, dead letters, drops, paused)."""
        doc = read_stats_json(self.spool.stats(), self.device, self.clock.wall_us())
        return {**doc, **self.gate.snapshot_fields()}

    # ---------------------------------------------------------------- step

    def step(self, now: float) -> float:
        """Do one round of work; returns how long the caller may wait before the next."""
        self.now = now
        delay = self._step(now)
        session = self.link.session
        self._unacked_since = None if session is None else session.window.oldest()
        self.publisher.acks_wake = self._waits_on_acks(session)
        return delay

    def _waits_on_acks(self, session: Session | None) -> bool:
        """Whether the next PUBACK should wake the step: always, unless ``lazy_acks``
        (the daemon) and the window and ``max_resend`` leave room and no shutdown waits.
        Otherwise acks wait in the queue for the next wake-up (new rows, a timer: the
        settle delay, the ack timeout), which handles them all at once."""
        if not self.lazy_acks or self.stopping or session is None or not session.connected:
            return True
        window = session.window
        return window.room() <= 0 or self.settler.fits(window.readings) <= 0

    def _step(self, now: float) -> float:
        for event in self.publisher.events():
            self._handle(event, now)
        self.settler.sync_if_due(now)
        session = self.link.session
        if session is None:
            if not self.stopping and now >= self.link.next_attempt:
                self.link.start_attempt(now)
        elif not session.connected:
            if self.link.connect_overdue(session, now):
                reason = "no CONNACK within the connect timeout"
                self.link.failed(now, FailureKind.TIMEOUT, reason)
        elif not self._ack_overdue(session, now):
            self.settler.step(now)
            self.outbox.step(now)
            if not self.stopping:
                self._fill(session, now)
        return self._next_wait(now)

    def _fill(self, session: Session, now: float) -> None:
        with self.publisher.corked():  # one wake-up of the network side per fill
            self._fill_corked(session, now)

    def _fill_corked(self, session: Session, now: float) -> None:
        sent = self.outbox.flush(self.publisher, session.window, now)
        if sent is None:
            self._publish_refused(session, now)
            return
        if not sent:
            return  # control messages first; readings wait for the window
        self.source.found = None
        if not self.sender.fill(session, now):
            self._publish_refused(session, now)
            return
        if self.source.found:
            self.drained = False
        elif self.source.found is False and not self._busy(session):
            self.drained = True
            self.source.forget_leases()  # pick up rows requeued behind the cursor

    def _busy(self, session: Session) -> bool:
        return bool(session.window.load() or self.settler.pending or self.sender.waiting)

    def _next_wait(self, now: float) -> float:
        """Seconds until the next timer is due; events (PUBACK, CONNACK, a commit of
        this process) wake the caller earlier through the publisher's ``wait``."""
        session = self.link.session
        timers = [self.link.due(now), self.settler.next_due(now)]
        if session is not None and session.connected:
            timers.append(self.outbox.next_snapshot)
            oldest = session.window.oldest()
            if oldest is not None:
                timers.append(oldest + self.cfg.ack_timeout + ACK_FLUSH_S)
                if self.lazy_acks:
                    timers.append(now + LAZY_ACK_S)  # the in-flight gauge and health stay current
            if not self.stopping:
                timers.append(self.sender.next_due(session, now))
        due = min((t for t in timers if t is not None), default=now + MAX_WAIT_S)
        return min(MAX_WAIT_S, max(0.0, due - now))

    # -------------------------------------------------------------- events

    def _handle(self, event: Event, now: float) -> None:
        session = self.link.session
        if session is None or event.generation != session.generation:
            return  # a late event of a client already thrown away
        if isinstance(event, Acked):
            seqs = session.window.ack(event.mid)
            if seqs and not self.gate.keeps(event.reason_code, now):
                arrived = min(now, event.at) if event.at else now
                self.settler.on_ack(seqs, event.reason_code, event.reason, arrived)
        elif isinstance(event, ConsumerState):
            self.gate.on_consumer_state(event.online)
        elif isinstance(event, Connected):
            self._on_connected(session, event, now)
        elif isinstance(event, ConnectFailed):
            self.link.failed(now, event.kind, event.reason)
        elif isinstance(event, Disconnected):
            if session.connected:
                self._on_disconnected(session, event, now)
            else:
                reason = f"connection closed before CONNACK ({event.reason})"
                self.link.failed(now, event.kind, reason)

    def _on_connected(self, session: Session, event: Connected, now: float) -> None:
        self.link.on_connected(session, event)
        self.source.restart()
        self.sender.clear()
        self.drained = False
        self.counters.set(BROKER_CONNECTED, 1)
        self.gate.on_connect()
        self.outbox.on_connect(now)

    def _on_disconnected(self, session: Session, event: Disconnected, now: float) -> None:
        self.settler.settle(now)
        self.link.lost(event, now, session.window.readings)

    def _publish_refused(self, session: Session, now: float) -> None:
        # paho lost the connection under us: stop now, resend after reconnect.
        lost = Disconnected(session.generation, FailureKind.NETWORK, "publish refused")
        self._on_disconnected(session, lost, now)

    def _ack_overdue(self, session: Session, now: float) -> bool:
        """A broker that stops acknowledging must not stall the bridge silently:
        after ``bridge.ack_timeout`` drop the connection and resend after reconnecting."""
        oldest = session.window.oldest()
        if oldest is None or now - oldest <= self.cfg.ack_timeout:
            return False
        self.settler.settle(now)
        self.link.ack_timed_out(session, now, oldest)
        return True

    def on_link_down(self) -> None:
        """A session ended: rows leased but unacknowledged are leased again later."""
        self.source.forget_leases()
        self.sender.clear()
        self.counters.set(BROKER_CONNECTED, 0)

    def on_gate_change(self, now: float) -> None:
        """The gate paused or resumed readings: the metric and the retained snapshot say so."""
        self.counters.set(READINGS_PAUSED, 1 if self.gate.paused else 0)
        self.outbox.send_snapshot(now)

    # ------------------------------------------------------------ shutdown

    def log_dead_letter_summary(self) -> None:
        """At the end of a run: the total per reason code, if the broker rejected anything."""
        self.parts.dead_letters.summary()

    def shutdown(
        self, timeout: float, now: Callable[[], float], wait: Callable[[float], None]
    ) -> int:
        """Stop publishing, wait up to ``timeout`` for in-flight acks, say ``offline``.

        Returns how many readings were still unacknowledged (they stay spooled).
        """
        self.stopping = True
        self.publisher.acks_wake = True  # every wait below is for a PUBACK
        deadline = now() + timeout
        # ``wait`` is the publisher's: a PUBACK or a disconnect ends it early, so it
        # waits for the bridge's next timer (or the deadline), never in short polls.
        while self.connected and self.inflight and now() < deadline:
            delay = self.step(now())
            if self.connected and self.inflight:  # the last PUBACK ends the loop at once
                wait(min(delay, max(0.0, deadline - now())))
        for event in self.publisher.events():
            self._handle(event, now())
        self.settler.settle(now())
        self.log_dead_letter_summary()
        left = self.inflight
        session = self.link.session
        if session is not None and session.connected:
            self._say_offline(session, deadline, now, wait)
        self.link.close()
        return left

    def _say_offline(
        self,
        session: Session,
        deadline: float,
        now: Callable[[], float],
        wait: Callable[[float], None],
    ) -> None:
        # Receive Maximum bounds QoS 1 and 2 only: with the window still full, QoS 0
        # still leaves the retained status right (the will is not sent on a clean
        # disconnect, so saying nothing would leave dashboards showing `online`).
        window = session.window
        qos = 1 if window.room() > 0 else 0
        mid = self.publisher.publish(self.outbox.status_topic, b"offline", qos, True)
        if mid is None:
            return
        window.add(mid, now())
        end = max(deadline, now() + 1.0)
        while window.holds(mid) and now() < end:
            wait(max(0.0, end - now()))  # the PUBACK (any paho event) ends the wait
            for event in self.publisher.events():
                if isinstance(event, Acked):
                    window.ack(event.mid)


def build_bridge(
    settings: Settings,
    spool: Spool,
    publisher: Publisher,
    clock: Clock,
    counters: Counters | None = None,
    companions: Sequence[Companion] = (),
    rng: random.Random | None = None,
    *,
    settle_delay: float = ACK_FLUSH_S,
    batch_linger: float | None = None,
    lazy_acks: bool = False,
) -> Bridge:
    """A bridge with its parts wired from ``settings`` (``bridge.payload`` picks the sender).

    ``settle_delay``: how long acknowledged rows wait to be deleted together (the daemon:
    :data:`SETTLE_DELAY_S`); ``batch_linger`` overrides ``bridge.batch_linger``;
    ``lazy_acks`` (the daemon): PUBACKs wake the bridge only when something waits on them.
    """
    cfg = settings.bridge
    counters = counters or Counters()
    late = _Late()
    throttle = LogThrottle(FAILURE_LOG_INTERVAL_S, clock=late.now)
    dead_letters = DeadLetterLog(publisher.broker, throttle)
    slack = LAZY_SETTLE_SLACK_S if lazy_acks else 0.0
    settler = Settler.for_bridge(spool, cfg, settle_delay, counters, dead_letters, throttle, slack)
    gate = ConsumerGate.for_bridge(cfg)  # the consumer gate (bridge.require_subscribers, ...)
    source = RowSource(spool, gate, late.gate_changed, live_first=cfg.live_first)
    link = Link(publisher, settings, throttle, late.link_down, spool.depth, rng)
    outbox = Outbox(settings.topics.prefix, settings.device.id, late.snapshot, companions)
    bucket = TokenBucket(cfg.max_rate)
    shared = SendContext(publisher, spool, source, settler, outbox, bucket, clock, cfg.live_window)
    sender = _sender(settings, shared, batch_linger)
    parts = Parts(link, source, settler, outbox, sender, dead_letters, gate, counters, throttle)
    late.bridge = bridge = Bridge(settings, spool, clock, parts, lazy_acks=lazy_acks)
    return bridge


class _Late:
    """Calls from the parts into the bridge, which is built after them (they are handed
    to its constructor)."""

    bridge: Bridge | None = None

    def now(self) -> float:
        """The time of the bridge's current step (the log throttle's clock)."""
        return 0.0 if self.bridge is None else self.bridge.now

    def link_down(self) -> None:
        """A session ended."""
        if self.bridge is not None:
            self.bridge.on_link_down()

    def gate_changed(self, now: float) -> None:
        """The consumer gate paused or resumed readings."""
        if self.bridge is not None:
            self.bridge.on_gate_change(now)

    def snapshot(self) -> dict[str, object]:
        """The retained spool document."""
        return {} if self.bridge is None else self.bridge.snapshot()


def _sender(settings: Settings, shared: SendContext, batch_linger: float | None) -> Sender:
    """The one place ``bridge.payload`` is looked at."""
    cfg, prefix = settings.bridge, settings.topics.prefix
    if cfg.payload == "reading":
        return ReadingSender(shared, prefix)
    return BatchSender(
        shared,
        prefix,
        max_readings=cfg.batch_max_readings,
        max_bytes=cfg.batch_max_bytes,
        linger=cfg.batch_linger if batch_linger is None else batch_linger,
        live=ReadingSender(shared, prefix) if cfg.payload == "mixed" else None,
    )
