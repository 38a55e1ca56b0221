"""A fake :class:`~mqttspool.mqtt.Publisher`: records what the bridge sends.

Two ways to drive it:

* scripted (default): the test decides what the broker answers, with
  :meth:`FakePublisher.accept`, :meth:`ack`, :meth:`fail`, :meth:`drop`...;
* ``auto=True``: it answers like a small broker by itself (CONNACK with
  ``receive_maximum``, PUBACK 0 or 0x87 for ``denied_prefix``, refused while
  ``reachable`` is False), so the Publisher contract test can run the same
  cases against it and against :class:`~mqttspool.mqtt.MqttPublisher`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mqttspool.mqtt import (
    Acked,
    Connected,
    ConnectFailed,
    Disconnected,
    Event,
    FailureKind,
    PublishProperties,
)

NOT_AUTHORIZED = 0x87
TOPIC_ALIAS_INVALID = 0x94


@dataclass
class Sent:
    """One message handed to the fake."""

    mid: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: PublishProperties | None = None
    resolved_topic: str = ""  # the topic the broker delivers on (after topic aliases)

    def doc(self) -> dict[str, Any]:
        """The payload as JSON."""
        result: dict[str, Any] = json.loads(self.payload)
        return result


@dataclass
class FakePublisher:
    """Records what the bridge does; the test (or ``auto``) decides what the broker answers."""

    auto: bool = False
    acks_wake: bool = True  # set by the bridge; events here never block anyway
    receive_maximum: int | None = 65535
    denied_prefix: str | None = None
    reachable: bool = True
    generation: int = 0
    corked_blocks: int = 0
    in_cork: bool = False
    sent: list[Sent] = field(default_factory=list)
    pending: list[Event] = field(default_factory=list)
    closes: int = 0
    next_mid: int = 0
    refuse_publish: bool = False
    topic_alias_maximum: int = 0  # what ``auto`` mode's CONNACK grants
    aliases: dict[int, str] = field(default_factory=dict)  # this connection's, like a broker
    _open: bool = False

    @property
    def broker(self) -> str:
        """A made-up address."""
        return "fake:1883"

    def connect(self) -> int:
        """A new generation; in ``auto`` mode CONNACK (or a refusal) at once."""
        self.generation += 1
        if self.auto and self.reachable:
            self.accept(self.receive_maximum, self.topic_alias_maximum)
        elif self.auto:
            self.fail(FailureKind.NETWORK, "connection refused (fake)")
        return self.generation

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: PublishProperties | None = None,
    ) -> int | None:
        """Record the message (None when not connected); in ``auto`` mode PUBACK it.

        Topic aliases resolve like a broker resolves them; an alias above the granted
        maximum, or an empty topic with an unknown alias, ends the connection (0x94).
        """
        if self.refuse_publish or not self._open:
            return None
        self.next_mid += 1
        resolved = self._resolve(topic, properties)
        if resolved is None:
            self.drop(FailureKind.PROTOCOL, "Topic alias invalid", TOPIC_ALIAS_INVALID)
            return self.next_mid
        self.sent.append(Sent(self.next_mid, topic, payload, qos, retain, properties, resolved))
        if self.auto and qos > 0:
            denied = self.denied_prefix is not None and resolved.startswith(self.denied_prefix)
            self.ack([self.next_mid], NOT_AUTHORIZED if denied else 0)
        return self.next_mid

    def _resolve(self, topic: str, properties: PublishProperties | None) -> str | None:
        alias = properties.topic_alias if properties else None
        if alias is None:
            return topic or None
        if not 1 <= alias <= self.topic_alias_maximum:
            return None
        if topic:
            self.aliases[alias] = topic
        return self.aliases.get(alias)

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Count the block and mark it (messages go out synchronously here anyway)."""
        self.corked_blocks += 1
        self.in_cork = True
        try:
            yield
        finally:
            self.in_cork = False

    def events(self) -> list[Event]:
        """Everything queued since the last call."""
        out, self.pending = self.pending, []
        return out

    def wait(self, timeout: float) -> None:
        """Nothing to wait for: events are queued synchronously."""
        return None

    def close(self) -> None:
        """Count the close; an open connection reports a ``CLOSED`` Disconnected."""
        self.closes += 1
        if self._open:
            self.pending.append(
                Disconnected(self.generation, FailureKind.CLOSED, "Normal disconnection", 0)
            )
        self._open = False

    # -- test helpers --

    def accept(self, receive_maximum: int | None = 65535, topic_alias_maximum: int = 0) -> None:
        """The broker's CONNACK (success); a new connection starts with no aliases."""
        self._open = True
        self.topic_alias_maximum = topic_alias_maximum
        self.aliases = {}
        self.pending.append(Connected(self.generation, receive_maximum, topic_alias_maximum))

    def fail(self, kind: FailureKind, reason: str, code: int | None = None) -> None:
        """The connection attempt fails."""
        self.pending.append(ConnectFailed(self.generation, kind, reason, code))

    def drop(
        self, kind: FailureKind = FailureKind.NETWORK, reason: str = "cut", code: int = 0x80
    ) -> None:
        """The established connection ends."""
        self._open = False
        self.pending.append(Disconnected(self.generation, kind, reason, code))

    def data(self) -> list[Sent]:
        """The readings sent one per message (not batches, status, snapshot or Home Assistant)."""
        return [s for s in self.sent if s.payload.startswith(b'{"id"')]

    def batches(self) -> list[Sent]:
        """The batch messages sent (topic ``.../batch``)."""
        return [s for s in self.sent if s.resolved_topic.endswith("/batch")]

    def ack(self, mids: list[int], code: int = 0, reason: str = "Success") -> None:
        """PUBACK ``mids`` with ``code``."""
        self.pending.extend(Acked(self.generation, m, code, reason) for m in mids)

    def control(self) -> list[Sent]:
        """Everything sent that is not a reading or batch (status, snapshot, Home Assistant)."""
        return [
            s
            for s in self.sent
            if not s.payload.startswith(b'{"id"') and not s.resolved_topic.endswith("/batch")
        ]

    def ack_control(self) -> None:
        """PUBACK every control message sent so far (the bridge ignores repeats)."""
        self.ack([s.mid for s in self.control() if s.qos > 0])

    def ack_all_data(self, code: int = 0) -> None:
        """PUBACK every reading sent so far."""
        self.ack([s.mid for s in self.data()], code)
