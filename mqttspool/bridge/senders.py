"""One sender per payload mode: readings one per message, or readings in batches.

``bridge.payload`` picks the sender once, when the bridge is built
(:func:`mqttspool.bridge.build_bridge`): ``reading`` -> :class:`ReadingSender`,
``batch`` -> :class:`BatchSender`, ``mixed`` -> a :class:`BatchSender` that
hands live readings to a :class:`ReadingSender`. Each fills the window of
one connection (:class:`~mqttspool.bridge.connection.Session`) within the
``max_resend`` bound the :class:`~mqttspool.bridge.settler.Settler` keeps.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Protocol

from mqttspool.mqtt import Publisher, PublishProperties
from mqttspool.reading import StoredReading
from mqttspool.spool import Spool
from mqttspool.timekeeping import Clock
from mqttspool.wire.batch import CONTENT_TYPE, ENCODING_PROPERTY, encode_within
from mqttspool.wire.payload import render_payload
from mqttspool.wire.topics import batch_topic, render_topic

from .connection import Session
from .leases import RowSource
from .outbox import Outbox
from .settler import Settler

BATCH_PROPERTIES = PublishProperties(CONTENT_TYPE, (ENCODING_PROPERTY,))


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


class Sender(Protocol):
    """Publishes spooled readings into a connection's window."""

    def fill(self, session: Session, now: float) -> bool:
        """Send what may go now; False when paho refused (the connection is lost)."""
        ...

    def clear(self) -> None:
        """A connection ended: forget rows leased but not sent (leased again later)."""
        ...

    @property
    def waiting(self) -> int:
        """Rows leased and not yet sent."""
        ...

    def next_due(self, session: Session, now: float) -> float | None:
        """When :meth:`fill` could send more without an event (a PUBACK, a commit)."""
        ...


class SendContext:
    """What both senders use: the publisher, the spool (epochs), the row source, the
    settler (the ``max_resend`` bound), the outbox (companion messages), the token
    bucket and the clock."""

    def __init__(
        self,
        publisher: Publisher,
        spool: Spool,
        source: RowSource,
        settler: Settler,
        outbox: Outbox,
        bucket: TokenBucket,
        clock: Clock,
        live_window: float,
    ) -> None:
        self.publisher, self.spool, self.source = publisher, spool, source
        self.settler, self.outbox, self.bucket, self.clock = settler, outbox, bucket, clock
        self._live_window_us = int(live_window * 1_000_000)

    def is_replay(self, row: StoredReading, now_us: int) -> bool:
        """Older than ``bridge.live_window``: sent with ``replay`` true."""
        return now_us - row.ts_us > self._live_window_us

    def send_timer(self, session: Session, now: float) -> float | None:
        """The token bucket or the spool watch, while the bounds leave room."""
        if session.window.room() <= 0 or self.settler.fits(session.window.readings) <= 0:
            return None  # a PUBACK (an event) frees room
        token = now + self.bucket.wait_for_one()
        watch = self.source.watch
        return max(watch.next_check, token) if watch.exhausted else token


class ReadingSender:
    """``bridge.payload = "reading"``: one message per reading, with topic aliases."""

    def __init__(self, shared: SendContext, prefix: str) -> None:
        self.s = shared
        self.prefix = prefix

    @property
    def waiting(self) -> int:
        """Nothing is held back in this mode."""
        return 0

    def clear(self) -> None:
        """Nothing is held back in this mode."""

    def next_due(self, session: Session, now: float) -> float | None:
        """The token bucket or the spool watch."""
        return self.s.send_timer(session, now)

    def fill(self, session: Session, now: float) -> bool:
        """Lease as many rows as the window, ``max_resend`` and the gate allow; send them."""
        s = self.s
        room = session.window.room()
        if room <= 0:
            return True
        in_flight = session.window.readings
        # No fsync to make room for rows that are not there.
        known_empty = s.source.watch.known_empty()
        fits = s.settler.fits(in_flight) if known_empty else s.settler.room(in_flight, room, now)
        room = s.source.gated(min(room, fits), in_flight, now) if fits > 0 else 0
        room = s.bucket.take(room, now) if room > 0 else 0
        if room <= 0:
            return True
        now_us = s.clock.wall_us()
        for row in s.source.lease(room, now):
            if not self.publish(session, row, s.is_replay(row, now_us), now, now_us):
                return False
        return True

    def publish(
        self, session: Session, row: StoredReading, replay: bool, now: float, now_us: int
    ) -> bool:
        """One reading, one message (topic alias when the broker grants them)."""
        topic = render_topic(self.prefix, row.device, row.sensor, row.metric)
        topic, props = session.aliases.for_topic(topic)
        payload = render_payload(row, self.s.spool.epoch_of(row.seq), replay)
        mid = self.s.publisher.publish(topic, payload, 1, False, props)
        if mid is None:
            return False
        session.window.add(mid, now, (row.seq,))
        self.s.outbox.on_reading(row, replay, now_us)
        return True


class BatchSender:
    """``bridge.payload = "batch"`` (``live`` None) or ``"mixed"`` (live readings go
    alone through ``live``, the backlog in batches).

    Leased rows wait in :attr:`pending` (with when they were leased) until their
    batch is full, closed by a row that cannot join, holds backlog, or has
    lingered ``batch_linger`` seconds. A batch is one message against the window;
    its readings count against ``max_resend`` and it is cut to what fits.
    """

    def __init__(
        self,
        shared: SendContext,
        prefix: str,
        *,
        max_readings: int,
        max_bytes: int,
        linger: float,
        live: ReadingSender | None = None,
    ) -> None:
        self.s = shared
        self.prefix = prefix
        self.cap = min(max_readings, shared.settler.max_resend)
        self.max_bytes = max_bytes
        self.linger = linger
        self.live = live
        self.pending: deque[tuple[StoredReading, float]] = deque()

    @property
    def waiting(self) -> int:
        """Rows leased and not yet sent."""
        return len(self.pending)

    def clear(self) -> None:
        """Leased, never sent: leased again after reconnecting."""
        self.pending.clear()

    def next_due(self, session: Session, now: float) -> float | None:
        """A lingering live batch (once due, only a PUBACK unblocks it), the token bucket
        or the spool watch."""
        timers = [self.s.send_timer(session, now)]
        linger_end = self.pending[0][1] + self.linger if self.pending else now
        if linger_end > now:
            timers.append(linger_end)
        return min((t for t in timers if t is not None), default=None)

    def fill(self, session: Session, now: float) -> bool:
        """Lease up to ``max_resend``, a batch at a time, and send what is due: the first
        batch leaves while the rest of a long backlog is still being read (leasing
        20,000 rows at once kept a slow link idle for 0.1 s)."""
        s = self.s
        now_us = s.clock.wall_us()
        while True:
            held = s.settler.pending + session.window.readings + len(self.pending)
            room = min(s.settler.max_resend - held, self.cap)
            if room > 0:
                room = s.source.gated(room, held, now)
            leased = s.source.lease(room, now) if room > 0 else []
            self.pending.extend((row, now) for row in leased)
            sent = self._send_due(session, now, now_us)
            if sent is None:
                return False
            if not leased or not sent or len(leased) < room:
                return True

    def _send_due(self, session: Session, now: float, now_us: int) -> bool | None:
        """Send pending batches while they are due. True: everything due went out;
        False: one must wait (window, bound, linger, rate); None: paho refused."""
        while self.pending:
            sent = self._send_next(session, now, now_us)
            if not sent:
                return sent
        return True

    def _send_next(self, session: Session, now: float, now_us: int) -> bool | None:
        """Send the head of the pending rows: a live reading alone (``mixed``) or a batch.
        True: sent; False: must wait; None: paho refused."""
        s = self.s
        head = self.pending[0][0]
        if session.window.room() <= 0:
            return False
        if self.live is not None and not s.is_replay(head, now_us):
            if s.settler.room(session.window.readings, 1, now) < 1 or not s.bucket.take(1, now):
                return False
            self.pending.popleft()
            return self.live.publish(session, head, False, now, now_us) or None
        rows, replay = self._run(now_us)
        if not self._due(rows, replay, now):
            return False
        room = s.settler.room(session.window.readings, len(rows), now)
        if room <= 0 or not s.bucket.take(1, now):
            return False
        return self._publish(session, rows[:room], replay[:room], now, now_us) or None

    def _run(self, now_us: int) -> tuple[list[StoredReading], list[bool]]:
        """The pending rows that may share the head's batch: same device and epoch (a batch
        carries one of each), in order; in ``mixed`` only replays. At most ``cap``."""
        epoch_of = self.s.spool.epoch_of
        head = self.pending[0][0]
        device, epoch = head.device, epoch_of(head.seq)
        rows: list[StoredReading] = []
        replay: list[bool] = []
        for row, _ in itertools.islice(self.pending, self.cap):
            flag = self.s.is_replay(row, now_us)
            if (
                row.device != device
                or epoch_of(row.seq) != epoch
                or (self.live is not None and not flag)
            ):
                break
            rows.append(row)
            replay.append(flag)
        return rows, replay

    def _due(self, rows: list[StoredReading], replay: list[bool], now: float) -> bool:
        """Full, holding backlog (never waits), closed by a row that cannot join, or
        lingered long enough: a live batch waits at most ``batch_linger`` to fill."""
        full = len(rows) >= self.cap
        closed = len(rows) < len(self.pending)
        lingered = now - self.pending[0][1] >= self.linger
        return full or closed or any(replay) or lingered

    def _publish(
        self,
        session: Session,
        rows: list[StoredReading],
        replay: list[bool],
        now: float,
        now_us: int,
    ) -> bool:
        device = rows[0].device
        epoch = self.s.spool.epoch_of(rows[0].seq)
        n, payload = encode_within(rows, device, epoch, replay, self.max_bytes)
        topic = batch_topic(self.prefix, device)
        mid = self.s.publisher.publish(topic, payload, 1, False, BATCH_PROPERTIES)
        if mid is None:
            return False
        for _ in range(n):
            self.pending.popleft()
        session.window.add(mid, now, tuple(row.seq for row in rows[:n]))
        for row, flag in zip(rows[:n], replay[:n], strict=True):
            self.s.outbox.on_reading(row, flag, now_us)
        return True
