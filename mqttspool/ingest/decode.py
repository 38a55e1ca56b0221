"""Turn broker messages into what ``ingest`` stores: rows, snapshots, undecodable payloads."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

from mqttspool.errors import ReadingError
from mqttspool.ingest.store import IngestRow, Snapshot, Undecodable, WriteBatch
from mqttspool.reading import WireMessage, parse_payload, to_us
from mqttspool.watch import TopicKind, classify_topic

# mqttspool.batch.decode (what `ingest` uses) or a test double: payload -> readings
# with the per-reading fields as attributes (id, seq, epoch, device, sensor, metric,
# value, unit, ts_us, time_synced, replay). Each becomes a row through
# row_from_batch, so dedupe and gaps work as for single readings.
BatchDecoder = Callable[[bytes], list[Any]]


def row_from(msg: WireMessage) -> IngestRow:
    """The stored form of one decoded reading."""
    r = msg.reading
    return IngestRow(
        id=msg.id,
        device=r.device,
        epoch=msg.epoch,
        seq=msg.seq,
        sensor=r.sensor,
        metric=r.metric,
        value=r.value,
        unit=r.unit,
        ts_us=to_us(r.ts),
        time_synced=r.time_synced,
        replay=msg.replay,
    )


def row_from_batch(d: Any) -> IngestRow:
    """The stored form of one reading decoded from a batch (same id as per-reading)."""
    return IngestRow(
        id=str(d.id),
        device=str(d.device),
        epoch=str(d.epoch),
        seq=int(d.seq),
        sensor=str(d.sensor),
        metric=str(d.metric),
        value=float(d.value),
        unit=None if d.unit is None else str(d.unit),
        ts_us=int(d.ts_us),
        time_synced=bool(d.time_synced),
        replay=bool(d.replay),
    )


def snapshot_from(payload: bytes) -> Snapshot:
    """Parse a retained spool snapshot; raises :class:`ReadingError` if it is not one."""
    try:
        doc: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReadingError("", f"spool snapshot is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ReadingError("", "spool snapshot is not a JSON object")
    device, epoch = doc.get("device"), doc.get("epoch")
    dropped, dead = doc.get("dropped"), doc.get("dead_letters")
    if not isinstance(device, str) or not isinstance(epoch, str):
        raise ReadingError("epoch", "spool snapshot lacks device or epoch")
    if not isinstance(dropped, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in dropped.values()
    ):
        raise ReadingError("dropped", "must be an object of counts")
    if not isinstance(dead, int) or isinstance(dead, bool):
        raise ReadingError("dead_letters", "must be an integer")
    return Snapshot(device, epoch, {str(k): int(v) for k, v in dropped.items()}, dead)


class Decoder:
    """Sorts messages under ``prefix`` into a :class:`WriteBatch`."""

    def __init__(self, prefix: str, batch_decoder: BatchDecoder | None) -> None:
        self.prefix = prefix
        self.batch_decoder = batch_decoder

    def add(self, batch: WriteBatch, topic: str, payload: bytes) -> None:
        """Decode one message into ``batch``; status and discovery topics are skipped."""
        kind = classify_topic(topic, self.prefix)
        try:
            if kind is TopicKind.READING:
                batch.rows.append(row_from(parse_payload(payload)))
            elif kind is TopicKind.BATCH:
                batch.rows.extend(self._decode_batch(payload))
            elif kind is TopicKind.SPOOL:
                batch.snapshots.append(snapshot_from(payload))
        except ReadingError as exc:
            batch.undecodable.append(Undecodable(topic, str(exc), payload))

    def _decode_batch(self, payload: bytes) -> list[IngestRow]:
        if self.batch_decoder is None:
            raise ReadingError("", "batch payload, but this build has no mqttspool.batch decoder")
        try:
            return [row_from_batch(d) for d in self.batch_decoder(payload)]
        except ReadingError:
            raise
        except (ValueError, TypeError, AttributeError, zlib.error) as exc:
            raise ReadingError("", f"batch payload cannot be decoded: {exc}") from exc
