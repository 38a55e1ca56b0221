"""Batch payloads: many readings in one compressed MQTT message (DESIGN.md, "Batch payload").

A batch travels on ``{prefix}/{device}/batch`` (QoS 1, not retained). Its
payload is a zlib stream (RFC 1950, what :func:`zlib.compress` writes) of a
UTF-8 JSON object whose columns have one entry per reading::

    {"v":1,"device":"edge-01","epoch":"9f3c2a1b",
     "streams":[["bme280","temperature","°C"],["bme280","humidity","%RH"]],
     "seq_delta":[42,1,1,1], "stream":[0,1,0,1],
     "ts_delta":[1795992144377000,12,999988,9],
     "value":[21.37,45.2,21.38,45.1], "time_synced":[1,1,1,1], "replay":[1,1,1,1]}

* ``streams`` lists ``[sensor, metric, unit]`` (unit may be null);
  ``stream[i]`` indexes it.
* ``seq_delta`` and ``ts_delta`` are delta-coded: the first entry is absolute,
  each next one the difference to the previous entry; a running sum restores
  ``seq`` and ``ts`` (integer microseconds since the Unix epoch, UTC).
* ``time_synced`` and ``replay`` are 0 or 1.

Reading ``i`` is exactly the per-reading payload with
``id = device:epoch:seq[i]``, so consumers dedupe and detect gaps the same way
for both forms. MQTT v5 messages carry Content Type :data:`CONTENT_TYPE` and
the user property ``encoding=zlib``.

Consumers in Python call :func:`decode`; :func:`encode` is what the bridge
sends. Every problem with a payload raises :class:`BatchError` naming what is
wrong.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Sequence
from typing import Any

from mqttspool.reading import StoredReading, format_ts, reading_id
from mqttspool.wire.bounds import (
    MAX_BATCH_READINGS,
    MAX_INFLATED_BYTES,
    MAX_TS_US,
    MIN_TS_US,
    WireError,
    check_epoch,
    check_name,
    check_seq,
    check_unit,
    check_value,
    is_int,
)
from mqttspool.wire.jsonload import load_object
from mqttspool.wire.payload import DecodedReading

FORMAT_VERSION = 1
CONTENT_TYPE = "application/vnd.mqttspool.batch+json"
ENCODING_PROPERTY = ("encoding", "zlib")
COMPRESSION_LEVEL = 9  # the link is the scarce resource, not the CPU
BATCH_DEPTH = 3  # the object, its columns and "streams", each stream's [sensor, metric, unit]
_COLUMNS = ("seq_delta", "stream", "ts_delta", "value", "time_synced", "replay")
__all__ = [
    "CONTENT_TYPE",
    "ENCODING_PROPERTY",
    "MAX_INFLATED_BYTES",
    "MAX_TS_US",
    "MIN_TS_US",
    "BatchError",
    "DecodedReading",
    "decode",
    "decode_batch",
    "encode",
    "encode_within",
]


class BatchError(WireError):
    """A batch payload cannot be decoded; ``field`` names the part that is wrong."""


def encode(rows: Sequence[StoredReading], device: str, epoch: str, replay: Sequence[bool]) -> bytes:
    """The compressed batch payload of ``rows`` (all of ``device``), in the given order.

    ``replay[i]`` is the replay flag of ``rows[i]``. Raises :class:`ValueError`
    for an empty batch, a row of another device or mismatched lengths: those
    are programming errors, not bad input from outside.
    """
    if not rows or len(rows) != len(replay):
        raise ValueError("a batch needs at least one row and one replay flag per row")
    streams: dict[tuple[str, str, str | None], int] = {}
    stream_col: list[int] = []
    for row in rows:
        if row.device != device:
            raise ValueError(f"row seq {row.seq} belongs to device {row.device!r}, not {device!r}")
        key = (row.sensor, row.metric, row.unit)
        stream_col.append(streams.setdefault(key, len(streams)))
    doc = {
        "v": FORMAT_VERSION,
        "device": device,
        "epoch": epoch,
        "streams": [list(key) for key in streams],
        "seq_delta": _deltas([row.seq for row in rows]),
        "stream": stream_col,
        "ts_delta": _deltas([row.ts_us for row in rows]),
        "value": [row.value for row in rows],
        "time_synced": [int(row.time_synced) for row in rows],
        "replay": [int(flag) for flag in replay],
    }
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return zlib.compress(text.encode(), COMPRESSION_LEVEL)


def _deltas(numbers: list[int]) -> list[int]:
    return [numbers[0], *(b - a for a, b in itertools.pairwise(numbers))]


def decode(payload: bytes | bytearray) -> list[DecodedReading]:
    """The readings of one batch payload, in the order they were encoded.

    Raises :class:`BatchError` (a :class:`~mqttspool.wire.bounds.WireError`)
    when the payload is not a zlib stream, inflates to more than
    :data:`MAX_INFLATED_BYTES`, is not a UTF-8 JSON object of this format
    (nested at most :data:`BATCH_DEPTH` deep), holds more than
    :data:`MAX_BATCH_READINGS` readings, has columns of unequal length, a
    stream index out of range, or breaks a bound of the contract (names,
    epoch, unit, finite value, seq 1..2^63-1, ts in years 1..9999).
    """
    try:
        doc = load_object(_inflate(payload), BATCH_DEPTH, "batch", MAX_INFLATED_BYTES)
    except BatchError:
        raise
    except WireError as exc:
        raise BatchError(exc.field, exc.message) from exc
    device, epoch = _header(doc)
    streams = _streams(doc.get("streams"))
    columns = _columns(doc)
    seqs = _running_sum(columns["seq_delta"], "seq_delta")
    times = _running_sum(columns["ts_delta"], "ts_delta")
    out = []
    for i, seq in enumerate(seqs):
        _check(check_seq, seq, f"seq_delta[{i}]")
        if not MIN_TS_US <= times[i] <= MAX_TS_US:
            raise BatchError(f"ts_delta[{i}]", f"ts {times[i]} µs is outside years 1..9999")
        sensor, metric, unit = streams[columns["stream"][i]]
        value = float(columns["value"][i])
        synced, replay = columns["time_synced"][i] == 1, columns["replay"][i] == 1
        rid = reading_id(device, epoch, seq)
        ts = format_ts(times[i])
        out.append(
            DecodedReading(
                rid, seq, device, sensor, metric, value, unit, ts, synced, replay, times[i]
            )
        )
    return out


decode_batch = decode  # the name the package exports (``mqttspool.decode_batch``)


def _check(check: Any, value: Any, where: str) -> Any:
    """``check(value, where)`` with its :class:`WireError` as a :class:`BatchError`."""
    try:
        return check(value, where)
    except BatchError:
        raise
    except WireError as exc:
        raise BatchError(exc.field, exc.message) from exc


def _inflate(payload: bytes | bytearray) -> bytes:
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(payload, MAX_INFLATED_BYTES + 1)
    except zlib.error as exc:
        raise BatchError("", f"batch payload is not a zlib stream ({exc})") from exc
    if len(data) > MAX_INFLATED_BYTES:
        raise BatchError("", f"batch payload inflates to more than {MAX_INFLATED_BYTES} bytes")
    if not inflater.eof:
        raise BatchError("", "batch payload is a truncated zlib stream")
    return data


def _header(doc: dict[str, Any]) -> tuple[str, str]:
    if doc.get("v") != FORMAT_VERSION or isinstance(doc.get("v"), bool):
        raise BatchError("v", f"unsupported batch format version {doc.get('v')!r:.40} (expected 1)")
    return _check(check_name, doc.get("device"), "device"), _check(
        check_epoch, doc.get("epoch"), "epoch"
    )


def _streams(raw: Any) -> list[tuple[str, str, str | None]]:
    if not isinstance(raw, list) or len(raw) > MAX_BATCH_READINGS:
        raise BatchError("streams", "must be a list of [sensor, metric, unit]")
    out = []
    for i, item in enumerate(raw):
        where = f"streams[{i}]"
        if not isinstance(item, list) or len(item) != 3:
            raise BatchError(where, "must be [sensor, metric, unit]")
        sensor, metric, unit = item
        out.append(
            (
                _check(check_name, sensor, f"{where}.sensor"),
                _check(check_name, metric, f"{where}.metric"),
                _check(check_unit, unit, f"{where}.unit"),
            )
        )
    return out


def _columns(doc: dict[str, Any]) -> dict[str, list[Any]]:
    columns = {}
    for name in _COLUMNS:
        column = doc.get(name)
        if not isinstance(column, list):
            raise BatchError(name, "missing or not a list")
        columns[name] = column
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) != 1:
        raise BatchError("", f"columns of unequal length: {lengths}")
    if lengths["seq_delta"] > MAX_BATCH_READINGS:
        raise BatchError("seq_delta", f"more than {MAX_BATCH_READINGS} readings in one batch")
    n_streams = len(doc["streams"])
    for i, (stream, value) in enumerate(zip(columns["stream"], columns["value"], strict=True)):
        if not is_int(stream) or not 0 <= stream < n_streams:
            raise BatchError(f"stream[{i}]", f"{stream!r:.40} is not an index into streams")
        _check(check_value, value, f"value[{i}]")
    for name in ("time_synced", "replay"):
        for i, flag in enumerate(columns[name]):
            if not is_int(flag) or flag not in (0, 1):
                raise BatchError(f"{name}[{i}]", f"{flag!r:.40} is not 0 or 1")
    return columns


def _running_sum(deltas: list[Any], name: str) -> list[int]:
    total, out = 0, []
    for i, delta in enumerate(deltas):
        if not is_int(delta):
            raise BatchError(f"{name}[{i}]", f"{str(delta)[:40]} is not an integer")
        total += delta
        out.append(total)
    return out


def encode_within(
    rows: Sequence[StoredReading], device: str, epoch: str, replay: Sequence[bool], max_bytes: int
) -> tuple[int, bytes]:
    """The payload of the longest head of ``rows`` that compresses to at most ``max_bytes``.

    Returns ``(n, payload)`` for ``rows[:n]``; ``n`` is at least 1, so a single
    reading larger than the bound still goes out (alone). Shrinks by the measured
    ratio, so incompressible data costs a few encodes, not one per reading.
    """
    n = len(rows)
    while True:
        payload = encode(rows[:n], device, epoch, replay[:n])
        if len(payload) <= max_bytes or n == 1:
            return n, payload
        n = max(1, min(n - 1, int(n * max_bytes / len(payload) * 0.95)))
