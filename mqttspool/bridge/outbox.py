"""The outbox: control messages (status, spool snapshot, Home Assistant) waiting for room.

Control messages are QoS 1 like readings, so each counts against the window
(the broker's Receive Maximum counts them all); they wait here for a free
slot and go before readings. A retained message replaces a queued one on the
same topic (only the latest counts), so a window that stays full for hours
cannot grow the outbox.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mqttspool.config import Settings
from mqttspool.mqtt import Publisher, Will
from mqttspool.reading import StoredReading
from mqttspool.wire.topics import spool_topic, status_topic

from .window import Window

SNAPSHOT_INTERVAL_S = 60.0


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


def will_for(settings: Settings) -> Will:
    """Retained ``offline`` on the status topic."""
    return Will(status_topic(settings.topics.prefix, settings.device.id), b"offline")


class Outbox:
    """Queued control messages, the minute's snapshot timer and the companions."""

    def __init__(
        self,
        prefix: str,
        device: str,
        snapshot: Callable[[], dict[str, object]],
        companions: Sequence[Companion] = (),
    ) -> None:
        self.status_topic = status_topic(prefix, device)
        self.spool_topic = spool_topic(prefix, device)
        self._snapshot = snapshot
        self.companions = list(companions)
        self.queue: deque[OutMessage] = deque()
        self.next_snapshot = 0.0

    def send(self, msg: OutMessage) -> None:
        """Queue ``msg``; a retained one replaces the queued message on its topic."""
        if msg.retain and any(queued.topic == msg.topic for queued in self.queue):
            self.queue = deque(m for m in self.queue if m.topic != msg.topic)
        self.queue.append(msg)

    def on_connect(self, now: float) -> None:
        """``online``, the companions' connect messages and a snapshot go first; whatever
        the last connection left unsent follows."""
        left_over = list(self.queue)
        self.queue.clear()
        self.send(OutMessage(self.status_topic, b"online"))
        for companion in self.companions:
            for msg in companion.on_connect():
                self.send(msg)
        self.send_snapshot(now)
        queued = {m.topic for m in self.queue}
        # A stale retained message must not follow (and so replace) the fresh one.
        self.queue.extend(m for m in left_over if not (m.retain and m.topic in queued))

    def on_reading(self, row: StoredReading, replay: bool, now_us: int) -> None:
        """A reading went out: the companions' messages that go with it."""
        for companion in self.companions:
            for msg in companion.on_reading(row, replay, now_us):
                self.send(msg)

    def send_snapshot(self, now: float) -> None:
        """Queue the retained spool snapshot now; the next is due in a minute."""
        self.next_snapshot = now + SNAPSHOT_INTERVAL_S
        doc = self._snapshot()
        self.send(OutMessage(self.spool_topic, json.dumps(doc, separators=(",", ":")).encode()))

    def step(self, now: float) -> None:
        """Queue the snapshot when its minute is up."""
        if now >= self.next_snapshot:
            self.send_snapshot(now)

    def flush(self, publisher: Publisher, window: Window, now: float) -> bool | None:
        """Publish queued messages while the window has room.

        True: all went; False: the window is full; None: paho refused (connection lost).
        """
        while self.queue:
            msg = self.queue[0]
            if msg.qos > 0 and window.room() <= 0:
                return False
            mid = publisher.publish(msg.topic, msg.payload, msg.qos, msg.retain)
            if mid is None:
                return None
            self.queue.popleft()
            if msg.qos > 0:
                window.add(mid, now)
        return True
