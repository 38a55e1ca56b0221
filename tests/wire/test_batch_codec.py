"""The batch payload (DESIGN.md "Batch payload"): encode -> decode is the identity, bad input
is a BatchError naming what is wrong, and the bytes follow the documented format exactly."""

from __future__ import annotations

import contextlib
import json
import sys
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import mqttspool
from mqttspool.batch import MAX_INFLATED_BYTES, BatchError, decode, encode
from mqttspool.errors import ReadingError
from mqttspool.reading import StoredReading
from mqttspool.wire.bounds import MAX_TS_US, MIN_TS_US
from mqttspool.wire.payload import render_payload

NAMES = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
UNITS = st.none() | st.text(
    st.characters(exclude_categories=("Cc", "Cs")), max_size=16
)  # no control characters (the contract)
VALUES = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [sys.float_info.max, -sys.float_info.max, sys.float_info.min, 5e-324, -5e-324, -0.0, 0.0]
)
TIMES = st.integers(MIN_TS_US, MAX_TS_US) | st.sampled_from([MIN_TS_US, MAX_TS_US, 0, -1])


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[StoredReading], list[bool]]:
    """Readings of one device with arbitrary streams, strictly rising seqs, any timestamps."""
    device = draw(NAMES)
    streams = draw(st.lists(st.tuples(NAMES, NAMES, UNITS), min_size=1, max_size=40))
    n = draw(st.integers(1, 60))
    seq = draw(st.integers(1, 2**62))
    rows = []
    for _ in range(n):
        sensor, metric, unit = draw(st.sampled_from(streams))
        value, ts_us, synced = draw(VALUES), draw(TIMES), draw(st.booleans())
        rows.append(StoredReading(seq, device, sensor, metric, value, unit, ts_us, synced))
        seq += draw(st.integers(1, 2**40))
    return rows, draw(st.lists(st.booleans(), min_size=n, max_size=n))


def _docs(rows: list[StoredReading], replay: list[bool], epoch: str) -> list[dict[str, Any]]:
    return [json.loads(render_payload(r, epoch, f)) for r, f in zip(rows, replay, strict=True)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.from_regex(r"[0-9a-f]{8}", fullmatch=True))
def test_encode_decode_is_the_identity(
    batch: tuple[list[StoredReading], list[bool]], epoch: str
) -> None:
    rows, replay = batch
    decoded = decode(encode(rows, rows[0].device, epoch, replay))
    # Each decoded reading is exactly the per-reading payload, value bits included (-0.0).
    assert [d.payload_doc() for d in decoded] == _docs(rows, replay, epoch)
    assert [(d.value.hex(), d.ts_us, d.epoch) for d in decoded] == [
        (r.value.hex(), r.ts_us, epoch) for r in rows
    ]


def test_extremes_of_value_and_time_round_trip() -> None:
    values = [sys.float_info.max, -sys.float_info.max, 5e-324, -0.0, 2.2250738585072014e-308]
    times = [MIN_TS_US, MAX_TS_US, 1, -1, 1_795_992_144_377_001]
    rows = [
        StoredReading(i + 1, "edge-01", "s", "m", v, "µS/cm", t, i % 2 == 0)
        for i, (v, t) in enumerate(zip(values, times, strict=True))
    ]
    decoded = decode(encode(rows, "edge-01", "9f3c2a1b", [True] * 5))
    assert [d.ts for d in decoded] == [
        "0001-01-01T00:00:00.000Z",
        "9999-12-31T23:59:59.999999Z",
        "1970-01-01T00:00:00.000001Z",
        "1969-12-31T23:59:59.999999Z",
        "2026-11-29T22:42:24.377001Z",
    ]
    assert [d.value.hex() for d in decoded] == [v.hex() for v in values]


def test_wire_format_is_the_documented_one() -> None:
    rows = [
        StoredReading(42, "edge-01", "bme280", "temperature", 21.37, "°C", 1795992144377000, True),
        StoredReading(43, "edge-01", "bme280", "humidity", 45.2, "%RH", 1795992144377012, True),
        StoredReading(44, "edge-01", "bme280", "temperature", 21.38, "°C", 1795992145377000, True),
        StoredReading(45, "edge-01", "bme280", "humidity", 45.1, "%RH", 1795992145377009, False),
    ]
    payload = encode(rows, "edge-01", "9f3c2a1b", [True, True, True, False])
    assert payload[0] == 0x78  # RFC 1950 header, what zlib.compress writes
    assert json.loads(zlib.decompress(payload)) == {
        "v": 1,
        "device": "edge-01",
        "epoch": "9f3c2a1b",
        "streams": [["bme280", "temperature", "°C"], ["bme280", "humidity", "%RH"]],
        "seq_delta": [42, 1, 1, 1],
        "stream": [0, 1, 0, 1],
        "ts_delta": [1795992144377000, 12, 999988, 9],
        "value": [21.37, 45.2, 21.38, 45.1],
        "time_synced": [1, 1, 1, 0],
        "replay": [1, 1, 1, 0],
    }
    assert decode(payload)[0].id == "edge-01:9f3c2a1b:42"


def _z(doc: Any) -> bytes:
    return zlib.compress(json.dumps(doc).encode())


GOOD: dict[str, Any] = {
    "v": 1,
    "device": "edge-01",
    "epoch": "ab",
    "streams": [["s", "m", None]],
    "seq_delta": [1, 1],
    "stream": [0, 0],
    "ts_delta": [0, 1],
    "value": [1.5, 2],
    "time_synced": [1, 0],
    "replay": [0, 1],
}


def _with(**changes: Any) -> bytes:
    return _z({**GOOD, **changes})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"v":1}', "batch payload is not a zlib stream"),
        (_z(GOOD)[:-6], "truncated zlib stream"),
        (zlib.compress(b"{not json"), "batch is not valid JSON"),
        (zlib.compress(b"\xff\xfe"), "batch is not valid UTF-8 (at byte 1)"),
        (zlib.compress(b"[1,2]"), "batch is not a JSON object"),
        (_with(v=2), "v: unsupported batch format version 2 (expected 1)"),
        (_with(device="a/b"), "device: must be a name"),
        (_with(epoch=""), "epoch: must be 1-32 characters [0-9a-f]"),
        (_with(streams=[["s", "m"]]), "streams[0]: must be [sensor, metric, unit]"),
        (_with(streams=[["s", "m", 3]]), "streams[0].unit: must be null or a string of at most 16"),
        (_with(value=[1.0]), "columns of unequal length"),
        (_with(replay=None), "replay: missing or not a list"),
        (_with(stream=[0, 1]), "stream[1]: 1 is not an index into streams"),
        (_with(stream=[0, -1]), "stream[1]: -1 is not an index into streams"),
        (_with(stream=[0, True]), "stream[1]: True is not an index into streams"),
        (_with(value=[1.0, "2"]), "value[1]: must be a finite number"),
        (
            zlib.compress(json.dumps(GOOD).replace("1.5, 2]", "1.5, 1e999]").encode()),
            "value[1]: must be a finite number (NaN and infinity",
        ),
        (_with(time_synced=[1, 2]), "time_synced[1]: 2 is not 0 or 1"),
        (_with(seq_delta=[1, 1.5]), "seq_delta[1]: 1.5 is not an integer"),
        (_with(seq_delta=[1, -1]), "seq_delta[1]: must be an integer 1..9223372036854775807"),
        (_with(ts_delta=[MAX_TS_US, 1]), "ts_delta[1]: ts 253402300800000000 µs is outside"),
    ],
)
def test_bad_payloads_raise_batch_error_naming_the_problem(payload: bytes, message: str) -> None:
    with pytest.raises(BatchError) as info:
        decode(payload)
    assert message in str(info.value)
    assert isinstance(info.value, ReadingError)


def test_a_decompression_bomb_is_refused_without_inflating_it_all() -> None:
    bomb = zlib.compress(b" " * (MAX_INFLATED_BYTES * 4), 9)  # ~64 KiB on the wire
    with pytest.raises(BatchError, match="inflates to more than 16777216 bytes"):
        decode(bomb)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@example(b"")
@given(st.binary(max_size=200) | JSONISH.map(lambda d: json.dumps({**GOOD, "x": d}).encode()))
def test_arbitrary_input_never_escapes_as_another_error(raw: bytes) -> None:
    for payload in (raw, zlib.compress(raw)):
        with contextlib.suppress(BatchError):
            decode(payload)


@given(st.sampled_from(sorted(GOOD)), JSONISH)
def test_any_field_replaced_by_any_json_is_decoded_or_a_batch_error(key: str, junk: Any) -> None:
    with contextlib.suppress(BatchError):
        decode(_with(**{key: junk}))


def test_many_streams_round_trip() -> None:
    rows = [
        StoredReading(i + 1, "d", f"s{i % 500}", f"m{i % 7}", i / 3, None, i * 1000, True)
        for i in range(3000)
    ]
    decoded = decode(encode(rows, "d", "e1", [False] * 3000))
    assert [d.payload_doc() for d in decoded] == _docs(rows, [False] * 3000, "e1")


def test_the_package_exports_the_consumer_api_lazily() -> None:
    assert mqttspool.decode_batch is decode
    assert mqttspool.BatchError is BatchError
    assert mqttspool.DecodedReading.__name__ == "DecodedReading"
