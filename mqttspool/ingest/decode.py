"""Turn broker messages into what ``ingest`` stores: rows, snapshots, quarantined payloads.

Decoding is :func:`mqttspool.wire.decode` (the one decoder with the
contract's bounds); anything it refuses is quarantined with the reason.
"""

from __future__ import annotations

from mqttspool.errors import ReadingError
from mqttspool.ingest.store import IngestRow, Undecodable, WriteBatch
from mqttspool.wire import TopicKind, decode
from mqttspool.wire.payload import DecodedReading


def row_from(d: DecodedReading) -> IngestRow:
    """The stored form of one decoded reading (either payload form)."""
    return IngestRow(
        id=d.id,
        device=d.device,
        epoch=d.epoch,
        seq=d.seq,
        sensor=d.sensor,
        metric=d.metric,
        value=d.value,
        unit=d.unit,
        ts_us=d.ts_us,
        time_synced=d.time_synced,
        replay=d.replay,
    )


class Decoder:
    """Sorts messages under ``prefix`` into a :class:`WriteBatch`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def add(self, batch: WriteBatch, topic: str, payload: bytes) -> None:
        """Decode one message into ``batch``; status and discovery topics are skipped.

        Never raises for a message's content: what the decoder refuses goes
        to ``batch.undecodable`` with the reason.
        """
        try:
            decoded = decode(topic, payload, self.prefix)
        except ReadingError as exc:
            batch.undecodable.append(Undecodable(topic, str(exc), payload))
            return
        if decoded.kind in (TopicKind.READING, TopicKind.BATCH):
            batch.rows.extend(row_from(d) for d in decoded.readings)
        elif decoded.snapshot is not None:
            batch.snapshots.append(decoded.snapshot)
