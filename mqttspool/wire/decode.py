"""ONE decoder for everything a consumer receives: ``decode(topic, payload, prefix)``.

``watch``, ``ingest`` and the benches call it; it enforces the consumer
contract (DESIGN.md, "What a consumer accepts") and raises :class:`WireError`
naming the field for anything else, so a consumer can set the message aside
and go on. Status, Home Assistant state and other topics are classified but
not parsed (their payloads are not readings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mqttspool.wire import batch
from mqttspool.wire.bounds import WireError
from mqttspool.wire.payload import DecodedReading, parse_reading
from mqttspool.wire.snapshot import Snapshot, parse_snapshot
from mqttspool.wire.topics import TopicKind, classify_topic, topic_device


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decoded message: its kind, and the readings or the snapshot it carried."""

    kind: TopicKind
    readings: list[DecodedReading] = field(default_factory=list)
    snapshot: Snapshot | None = None


def decode(topic: str, payload: bytes, prefix: str) -> Decoded:
    """Decode one message received on ``topic``; raises :class:`WireError` naming the field.

    Readings, batches and spool snapshots must name the topic's device (a
    topic outside ``prefix``, ``watch --topic`` elsewhere, is checked as a
    reading without that rule).
    """
    kind = classify_topic(topic, prefix)
    device = topic_device(topic, prefix)
    if kind is TopicKind.READING:
        readings = [parse_reading(payload)]
    elif kind is TopicKind.BATCH:
        readings = batch.decode(payload)
    elif kind is TopicKind.SPOOL:
        snap = parse_snapshot(payload)
        _same_device(snap.device, device)
        return Decoded(kind, snapshot=snap)
    else:
        return Decoded(kind)
    if readings and device is not None:
        _same_device(readings[0].device, device)  # a batch has one device for all
    return Decoded(kind, readings)


def _same_device(payload_device: str, topic_device: str | None) -> None:
    if topic_device is not None and payload_device != topic_device:
        raise WireError(
            "device", f"{payload_device!r} does not match the topic's device {topic_device[:80]!r}"
        )
