"""The connection to the broker and its timers: attempts, backoff, connect timeout.

:class:`Link` owns the :class:`~mqttspool.mqtt.Publisher` and the current
:class:`Session` (one per connection attempt: its generation, its window,
its topic aliases). Every failure kind is retried with exponential backoff
plus jitter; configuration kinds are logged as errors with a hint, and every
repetitive line goes through the bridge's :class:`LogThrottle`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from mqttspool.config import Settings
from mqttspool.logthrottle import LogThrottle
from mqttspool.mqtt import (
    Connected,
    Disconnected,
    FailureKind,
    Publisher,
    PublishProperties,
    client_id_for,
)

from .window import Window

logger = logging.getLogger("mqttspool.bridge")

FLAPPING_HINT_COUNT = 3  # disconnects per log interval that suggest a client id clash
MAX_DOUBLINGS = 64  # 2**64 × reconnect_min is beyond any sane reconnect_max


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


@dataclass
class Session:
    """One connection attempt and, once the broker accepted it, the connection."""

    generation: int
    started: float
    connected: bool = False
    window: Window = field(default_factory=lambda: Window(0))
    aliases: TopicAliases = field(default_factory=lambda: TopicAliases(0))


class Link:
    """Connects, reconnects with backoff, and logs what happened to the connection.

    ``on_down`` is called whenever a session ends (the bridge forgets its leases).
    """

    def __init__(
        self,
        publisher: Publisher,
        settings: Settings,
        throttle: LogThrottle,
        on_down: Callable[[], None],
        depth: Callable[[], int],
        rng: random.Random | None = None,
    ) -> None:
        self.publisher = publisher
        self.cfg = settings.bridge
        self.protocol = settings.broker.protocol
        self.client_id = client_id_for(settings.broker.client_id, settings.device.id)
        self.attempt_timeout = max(10.0, float(settings.broker.keepalive))
        self.backoff = Backoff(self.cfg.reconnect_min, self.cfg.reconnect_max, rng)
        self._throttle = throttle
        self._on_down = on_down
        self._depth = depth
        self.session: Session | None = None
        self.next_attempt = 0.0
        self.last_failure = ""  # why the last connection attempt failed (drain reports it)

    @property
    def connected(self) -> bool:
        """True while a connection is established."""
        return self.session is not None and self.session.connected

    def start_attempt(self, now: float) -> None:
        """Connect in the background; CONNACK or a failure arrives as an event."""
        self.session = Session(self.publisher.connect(), now)

    def connect_overdue(self, session: Session, now: float) -> bool:
        """No CONNACK within the connect timeout."""
        return not session.connected and now - session.started > self.attempt_timeout

    def on_connected(self, session: Session, event: Connected) -> None:
        """The broker accepted: the window is min(max_inflight, its Receive Maximum)."""
        session.connected = True
        receive_max = event.receive_maximum
        session.window = Window(min(self.cfg.max_inflight, receive_max or self.cfg.max_inflight))
        session.aliases = TopicAliases(event.topic_alias_maximum)
        self.backoff.reset()
        self._log_connected(session, receive_max)

    def failed(self, now: float, kind: FailureKind, reason: str) -> None:
        """An attempt failed: log it and retry after the backoff."""
        self.last_failure = reason + _hint(kind)
        delay = self.backoff.next_delay()
        self._log_failure(kind, reason, delay)
        self.drop(now, delay)

    def lost(self, event: Disconnected, now: float, readings_in_flight: int) -> None:
        """An established connection ended: log it and reconnect after the backoff."""
        self._log_disconnect(event.kind, event.reason, readings_in_flight)
        self.drop(now, self.backoff.next_delay())

    def ack_timed_out(self, session: Session, now: float, oldest: float) -> None:
        """The oldest message waited ``bridge.ack_timeout``: drop the connection."""
        count = self._throttle.note("ack_timeout")
        if count:
            logger.warning(
                "broker %s has not acknowledged %d message(s) for %.1f s (bridge.ack_timeout"
                " %g s)%s: dropping the connection; the %d reading(s) among them stay spooled"
                " and will be resent after reconnecting",
                self.publisher.broker,
                session.window.load(),
                now - oldest,
                self.cfg.ack_timeout,
                _times(count, "times"),
                session.window.readings,
            )
        self.drop(now, self.backoff.next_delay())

    def drop(self, now: float, delay: float) -> None:
        """Close the client; the next attempt is ``delay`` seconds away."""
        self.close()
        self.next_attempt = now + delay

    def close(self) -> None:
        """Close the client (this joins paho's threads: it may block for seconds)."""
        self.publisher.close()
        self.session = None
        self._on_down()

    def due(self, now: float) -> float | None:
        """When an attempt starts or times out (None: connected)."""
        session = self.session
        if session is None:
            return self.next_attempt
        if not session.connected:
            return session.started + self.attempt_timeout + 0.05
        return None

    # ----------------------------------------------------------------- log

    def _log_connected(self, session: Session, receive_max: int | None) -> None:
        count = self._throttle.note("connected")
        if not count:
            return  # a flapping link: the disconnect lines carry the counts
        limit = "" if receive_max is None else f", broker Receive Maximum {receive_max}"
        logger.info(
            "connected to broker %s (MQTT %s); window %d (bridge.max_inflight %d%s),"
            " max_resend %d readings%s",
            self.publisher.broker,
            self.protocol,
            session.window.size,
            self.cfg.max_inflight,
            limit,
            self.cfg.max_resend,
            _times(count, "connects"),
        )

    def _log_failure(self, kind: FailureKind, reason: str, delay: float) -> None:
        count = self._throttle.note(("unreachable", kind))
        if not count:
            return
        logger.log(
            logging.ERROR if kind.configuration else logging.WARNING,
            "broker %s %s: %s%s; %d reading(s) spooled; retrying in %.1f s%s",
            self.publisher.broker,
            "refused the login" if kind is FailureKind.NOT_AUTHORIZED else "unreachable",
            reason,
            _times(count, "attempts"),
            self._depth(),
            delay,
            _hint(kind),
        )

    def _log_disconnect(self, kind: FailureKind, reason: str, readings_in_flight: int) -> None:
        count = self._throttle.note(("lost", kind))
        if not count:
            return
        if kind is FailureKind.SESSION_TAKEN_OVER:
            self._log_session_taken_over(reason, count)
            return
        hint = _hint(kind)
        if kind is FailureKind.NETWORK and count >= FLAPPING_HINT_COUNT:
            # Brokers without DISCONNECT 0x8E (mosquitto 2.0) take a session over silently.
            hint = (
                f"; if another client uses client id {self.client_id!r} (two devices on one"
                " device.id?), give each its own broker.client_id"
            )
        logger.log(
            logging.ERROR if kind.configuration else logging.WARNING,
            "lost connection to broker %s: %s%s; %d reading(s) in flight stay spooled and will"
            " be resent%s",
            self.publisher.broker,
            reason,
            _times(count, "disconnects"),
            readings_in_flight,
            hint,
        )

    def _log_session_taken_over(self, reason: str, count: int) -> None:
        logger.error(
            "broker %s took the session of client id %r over (%s)%s: another client connected"
            " with the same client id, e.g. a second device left on the same device.id or a"
            " second mqttspool on this spool. Give every device its own broker.client_id (or"
            " device.id); until then the two keep disconnecting each other",
            self.publisher.broker,
            self.client_id,
            reason,
            _times(count, "times"),
        )


def _times(count: int, what: str) -> str:
    """`` (N what)`` for a throttled log line that stands for ``count`` events."""
    return f" ({count} {what})" if count > 1 else ""


def _hint(kind: FailureKind) -> str:
    return f"; {kind.hint}" if kind.hint else ""
