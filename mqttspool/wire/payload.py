"""The per-reading payload: rendered by the bridge, parsed by every consumer.

``{"id":"edge-01:9f3c2a1b:42","seq":42,"device":"edge-01","sensor":"bme280",
"metric":"temperature","value":21.37,"unit":"°C","ts":"2026-11-26T00:40:00.123Z",
"time_synced":true,"replay":false}`` with ``id = device:epoch:seq``.

:class:`DecodedReading` is what a consumer gets for one reading, whichever
form (per-reading or batch) carried it.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mqttspool.reading import Reading, StoredReading, format_ts, from_us, reading_id, to_us
from mqttspool.wire.bounds import (
    MAX_MESSAGE_BYTES,
    WireError,
    check_epoch,
    check_flag,
    check_name,
    check_seq,
    check_ts_us,
    check_unit,
    check_value,
)
from mqttspool.wire.jsonload import load_object

READING_DEPTH = 1  # a flat object
# What the bridge renders (and any consumer-friendly ISO 8601 with a zone); strict,
# because datetime.fromisoformat alone accepts oddities such as a NUL separator.
_TS = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d{1,6})?)?(Z|[+-]\d\d:?\d\d)", re.ASCII)
_FIELDS = frozenset(
    ("id", "seq", "device", "sensor", "metric", "value", "unit", "ts", "time_synced", "replay")
)


@dataclass(frozen=True, slots=True)
class DecodedReading:
    """One reading as a consumer sees it: the per-reading fields, plus ``epoch`` and ``ts_us``.

    ``ts`` is rendered exactly as the per-reading payload renders it
    (``2026-11-26T00:40:00.123Z``); :meth:`payload_doc` is the per-reading
    JSON document this reading would have been sent as.
    """

    id: str
    seq: int
    device: str
    sensor: str
    metric: str
    value: float
    unit: str | None
    ts: str
    time_synced: bool
    replay: bool
    ts_us: int

    @property
    def epoch(self) -> str:
        """The spool epoch (the middle part of ``id``)."""
        return self.id.split(":")[1]

    def payload_doc(self) -> dict[str, Any]:
        """The per-reading payload document (DESIGN.md, wire format) for this reading."""
        return {
            "id": self.id,
            "seq": self.seq,
            "device": self.device,
            "sensor": self.sensor,
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "ts": self.ts,
            "time_synced": self.time_synced,
            "replay": self.replay,
        }


def render_payload(row: StoredReading, epoch: str, replay: bool) -> bytes:
    """Compact UTF-8 JSON payload of one reading (see DESIGN.md, wire format).

    ``epoch`` is the row's own epoch (``Spool.epoch_of(row.seq)``), not
    necessarily the spool's current one.

    Hand-assembled because it is the drain's hot path: names match
    ``[A-Za-z0-9_-]`` and the epoch is hex, so only ``unit`` needs JSON escaping;
    ``float.__repr__`` is exactly what ``json.dumps`` writes for a finite float.
    tests/wire/test_payload_bytes.py checks it against ``json.dumps`` of the same document.
    """
    unit = _json_unit(row.unit)
    return (
        f'{{"id":"{row.device}:{epoch}:{row.seq}","seq":{row.seq},"device":"{row.device}",'
        f'"sensor":"{row.sensor}","metric":"{row.metric}","value":{row.value!r},'
        f'"unit":{unit},"ts":"{format_ts(row.ts_us)}",'
        f'"time_synced":{"true" if row.time_synced else "false"},'
        f'"replay":{"true" if replay else "false"}}}'
    ).encode()


@functools.lru_cache(maxsize=256)
def _json_unit(unit: str | None) -> str:
    # A device has a handful of units: escape each once, not once per reading.
    return "null" if unit is None else json.dumps(unit, ensure_ascii=False)


def parse_reading(payload: bytes) -> DecodedReading:
    """Parse and check one per-reading payload; raises :class:`WireError` naming the field."""
    doc = load_object(payload, READING_DEPTH, "payload", MAX_MESSAGE_BYTES)
    extra = sorted(set(doc) - _FIELDS)
    if extra:
        raise WireError(extra[0], "is not a field of the per-reading payload")
    seq = check_seq(doc.get("seq"))
    device = check_name(doc.get("device"), "device")
    msg_id = doc.get("id")
    if not isinstance(msg_id, str) or msg_id.count(":") != 2:
        raise WireError("id", "must be device:epoch:seq")
    epoch = check_epoch(msg_id.split(":")[1], "id")
    if msg_id != reading_id(device, epoch, seq):
        raise WireError("id", f"{msg_id[:200]!r} does not match device and seq")
    ts_us = _parse_ts(doc.get("ts"))
    return DecodedReading(
        id=msg_id,
        seq=seq,
        device=device,
        sensor=check_name(doc.get("sensor"), "sensor"),
        metric=check_name(doc.get("metric"), "metric"),
        value=check_value(doc.get("value")),
        unit=check_unit(doc.get("unit")),
        ts=format_ts(ts_us),
        time_synced=check_flag(doc.get("time_synced", True), "time_synced"),
        replay=check_flag(doc.get("replay"), "replay"),
        ts_us=ts_us,
    )


def _parse_ts(raw: Any) -> int:
    if not isinstance(raw, str) or not _TS.fullmatch(raw):
        raise WireError("ts", "must be an ISO 8601 timestamp with a timezone")
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise WireError("ts", "must be an ISO 8601 timestamp with a timezone") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise WireError("ts", "timestamp must include a timezone (e.g. 2026-11-26T00:40:00Z)")
    try:
        return check_ts_us(to_us(ts.astimezone(UTC)))
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is year 10000 in UTC
        raise WireError("ts", "must lie in years 1..9999") from None


@dataclass(frozen=True, slots=True)
class WireMessage:
    """A per-reading payload parsed back into a :class:`~mqttspool.reading.Reading`."""

    id: str
    seq: int
    epoch: str
    reading: Reading
    replay: bool


def to_wire_message(decoded: DecodedReading) -> WireMessage:
    """``decoded`` with its reading as a validated :class:`~mqttspool.reading.Reading`."""
    reading = Reading(
        device=decoded.device,
        sensor=decoded.sensor,
        metric=decoded.metric,
        value=decoded.value,
        unit=decoded.unit,
        ts=from_us(decoded.ts_us),
        time_synced=decoded.time_synced,
    )
    return WireMessage(decoded.id, decoded.seq, decoded.epoch, reading, decoded.replay)


def parse_payload(payload: bytes) -> WireMessage:
    """Parse and validate a per-reading payload (the public API; see :func:`parse_reading`)."""
    return to_wire_message(parse_reading(payload))
