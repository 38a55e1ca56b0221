"""The one consumer decoder accepts exactly what the contract's bounds allow.

Each property draws values at and beyond one bound (DESIGN.md, "What a
consumer accepts") into an otherwise valid message and checks that
``mqttspool.wire.decode`` accepts it exactly when an independent oracle says
it is in bounds, and otherwise raises ``WireError`` naming the field.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqttspool.reading import StoredReading
from mqttspool.wire import TopicKind, WireError, decode
from mqttspool.wire.batch import encode
from mqttspool.wire.bounds import MAX_BATCH_READINGS, MAX_INFLATED_BYTES, MAX_MESSAGE_BYTES
from mqttspool.wire.payload import render_payload

PREFIX = "mqttspool"
MAX64 = 2**63 - 1
NAME_ALPHABET = "aZ09_-" + "/ .:é\x00+#"
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def reading_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "edge-01:ab12:42",
        "seq": 42,
        "device": "edge-01",
        "sensor": "bme280",
        "metric": "temperature",
        "value": 21.5,
        "unit": "°C",
        "ts": "2026-11-26T00:40:00.123Z",
        "time_synced": True,
        "replay": False,
    }
    doc.update(changes)
    if {"device", "seq"} & changes.keys() and "id" not in changes:
        doc["id"] = f"{doc['device']}:ab12:{doc['seq']}"
    return doc


def decode_reading(doc: dict[str, Any], device: str | None = None) -> Any:
    topic = f"{PREFIX}/{device if device is not None else doc['device']}/s/m"
    return decode(topic, json.dumps(doc).encode(), PREFIX)


def assert_verdict(call: Any, accepted: bool, field: str) -> None:
    if accepted:
        call()
        return
    with pytest.raises(WireError) as info:
        call()
    assert info.value.field.startswith(field), (info.value.field, field, str(info.value))


def is_name(s: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_-]{1,64}", s) is not None


names_any = st.text(NAME_ALPHABET, min_size=0, max_size=70) | st.text(
    "ab", min_size=60, max_size=70
)
ints_any = (
    st.integers(-(2**65), 2**65)
    | st.sampled_from([-1, 0, 1, MAX64 - 1, MAX64, MAX64 + 1, 2**64])
    | st.integers(MAX64 - 3, MAX64 + 3)
)


@given(field=st.sampled_from(["device", "sensor", "metric"]), name=names_any)
def test_reading_names(field: str, name: str) -> None:
    doc = reading_doc(**{field: name})
    topic_device = doc["device"].replace("/", "_")
    assert_verdict(lambda: decode_reading(doc, topic_device), is_name(name), field)


@given(epoch=st.text("0a9fAg:", min_size=0, max_size=40) | st.text("0f", min_size=30, max_size=34))
def test_reading_epoch(epoch: str) -> None:
    doc = reading_doc(id=f"edge-01:{epoch}:42")
    ok = re.fullmatch(r"[0-9a-f]{1,32}", epoch) is not None
    assert_verdict(lambda: decode_reading(doc), ok, "id")


@given(seq=ints_any | st.floats() | st.booleans() | st.just("42"))
def test_reading_seq(seq: Any) -> None:
    doc = reading_doc(seq=seq, id=f"edge-01:ab12:{seq}")
    ok = isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq <= MAX64
    assert_verdict(lambda: decode_reading(doc), ok, "seq")


@given(
    year=st.integers(1, 9999) | st.sampled_from([0, 10000, 12345]),
    offset_min=st.integers(-23 * 60 - 59, 23 * 60 + 59),
    day=st.sampled_from([(1, 1, 0, 0), (12, 31, 23, 59), (6, 15, 12, 0)]),
)
def test_reading_ts_years(year: int, offset_min: int, day: tuple[int, int, int, int]) -> None:
    month, dom, hour, minute = day
    sign = "+" if offset_min >= 0 else "-"
    off = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    ts = f"{year:04d}-{month:02d}-{dom:02d}T{hour:02d}:{minute:02d}:00{off}"
    ok = 1 <= year <= 9999
    if ok:  # the instant in UTC must stay within years 1..9999 too
        try:
            datetime(year, month, dom, hour, minute) - timedelta(minutes=offset_min)
        except OverflowError:
            ok = False
    assert_verdict(lambda: decode_reading(reading_doc(ts=ts)), ok, "ts")


@given(unit=st.none() | st.text(max_size=20) | st.text("\x00\x1f\x7f\x9fa", max_size=3))
def test_reading_unit(unit: str | None) -> None:
    ok = unit is None or (len(unit) <= 16 and not CONTROL.search(unit))
    assert_verdict(lambda: decode_reading(reading_doc(unit=unit)), ok, "unit")


@given(
    value=st.floats()
    | st.integers(-(2**1100), 2**1100)
    | st.sampled_from([10**400, -(10**400), 1.7976931348623157e308])
)
def test_reading_value_finite(value: float | int) -> None:
    try:
        ok = math.isfinite(float(value))
    except OverflowError:
        ok = False
    assert_verdict(lambda: decode_reading(reading_doc(value=value)), ok, "value")


@given(topic_device=st.sampled_from(["edge-01", "edge-02", "EDGE-01"]))
def test_reading_device_must_equal_the_topic_device(topic_device: str) -> None:
    ok = topic_device == "edge-01"
    assert_verdict(lambda: decode_reading(reading_doc(), topic_device), ok, "device")


@given(depth=st.integers(0, 6), field=st.sampled_from(["value", "unit", "sensor"]))
def test_reading_json_depth(depth: int, field: str) -> None:
    nested: Any = 1.0 if field == "value" else "x"
    for _ in range(depth):
        nested = [nested]
    doc = reading_doc(**{field: nested})
    assert_verdict(lambda: decode_reading(doc), depth == 0, "")  # "": the whole document


@given(pad=st.integers(MAX_MESSAGE_BYTES - 300, MAX_MESSAGE_BYTES + 10))
def test_reading_size_bound(pad: int) -> None:
    body = json.dumps(reading_doc()).encode()
    payload = body[:-1] + b" " * max(0, pad - len(body)) + b"}"
    ok = len(payload) <= MAX_MESSAGE_BYTES
    assert_verdict(lambda: decode(f"{PREFIX}/edge-01/s/m", payload, PREFIX), ok, "")


def snapshot_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "device": "edge-01",
        "epoch": "ab12",
        "depth": 3,
        "oldest_age_seconds": 1.5,
        "dead_letters": 0,
        "dropped": {"drop_oldest": 2},
        "last_publish": None,
        "spool_path": "/var/lib/mqttspool/spool.db",
    }
    doc.update(changes)
    return doc


def decode_snapshot(doc: dict[str, Any], device: str = "edge-01") -> Any:
    return decode(f"{PREFIX}/{device}/spool", json.dumps(doc).encode(), PREFIX)


@given(field=st.sampled_from(["dead_letters", "depth", "dropped"]), n=ints_any | st.booleans())
def test_snapshot_counters(field: str, n: int) -> None:
    doc = snapshot_doc(**({"dropped": {"drop_oldest": n}} if field == "dropped" else {field: n}))
    ok = isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX64
    assert_verdict(lambda: decode_snapshot(doc), ok, field)


@given(epoch=st.text("0a9fAg:\x00", min_size=0, max_size=40))
def test_snapshot_epoch(epoch: str) -> None:
    ok = re.fullmatch(r"[0-9a-f]{1,32}", epoch) is not None
    assert_verdict(lambda: decode_snapshot(snapshot_doc(epoch=epoch)), ok, "epoch")


@given(topic_device=st.sampled_from(["edge-01", "edge-02"]), depth=st.integers(0, 4))
def test_snapshot_device_and_depth(topic_device: str, depth: int) -> None:
    nested: Any = 2
    for _ in range(depth):
        nested = [nested]
    doc = snapshot_doc(dropped={"drop_oldest": nested})
    ok = depth == 0 and topic_device == "edge-01"
    field = "" if depth else "device"
    assert_verdict(lambda: decode_snapshot(doc, topic_device), ok, field)


def row(seq: int, unit: str | None = "%", value: float = 1.5, ts_us: int = 0) -> StoredReading:
    return StoredReading(seq, "edge-01", "s", "m", value, unit, ts_us, True)


def decode_batch_doc(doc: dict[str, Any], device: str = "edge-01") -> Any:
    payload = zlib.compress(json.dumps(doc).encode())
    return decode(f"{PREFIX}/{device}/batch", payload, PREFIX)


def batch_doc(n: int = 2, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": 1,
        "device": "edge-01",
        "epoch": "ab12",
        "streams": [["s", "m", "%"]],
        "seq_delta": [1] * n,
        "stream": [0] * n,
        "ts_delta": [0] * n,
        "value": [1.5] * n,
        "time_synced": [1] * n,
        "replay": [0] * n,
    }
    doc.update(changes)
    return doc


@given(first=ints_any, step=st.integers(-3, 3) | st.just(2**63))
def test_batch_seq(first: int, step: int) -> None:
    doc = batch_doc(seq_delta=[first, step])
    ok = 1 <= first <= MAX64 and 1 <= first + step <= MAX64
    assert_verdict(lambda: decode_batch_doc(doc), ok, "seq_delta")


@given(
    sensor=names_any,
    unit=st.none() | st.text(max_size=20),
    epoch=st.text("0af:", max_size=34),
    device=names_any,
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_batch_names_epoch_unit_device(
    sensor: str, unit: str | None, epoch: str, device: str
) -> None:
    doc = batch_doc(streams=[[sensor, "m", unit]], epoch=epoch, device=device)
    problems = []
    if not is_name(device):
        problems.append("device")
    if not re.fullmatch(r"[0-9a-f]{1,32}", epoch):
        problems.append("epoch")
    if not is_name(sensor) or not (unit is None or (len(unit) <= 16 and not CONTROL.search(unit))):
        problems.append("streams[0]")
    topic_device = device.replace("/", "_")
    assert_verdict(
        lambda: decode_batch_doc(doc, topic_device),
        not problems,
        (problems[:1] and problems[0]) or "",
    )


@given(ts0=st.integers(-62_135_596_800_000_000 - 5, 253_402_300_799_999_999 + 5) | ints_any)
def test_batch_ts_years(ts0: int) -> None:
    ok = -62_135_596_800_000_000 <= ts0 <= 253_402_300_799_999_999
    assert_verdict(lambda: decode_batch_doc(batch_doc(ts_delta=[ts0, 0])), ok, "ts_delta")


@given(value=st.floats() | st.integers(-(2**1100), 2**1100))
def test_batch_value_finite(value: float) -> None:
    try:
        ok = math.isfinite(float(value))
    except OverflowError:
        ok = False
    assert_verdict(lambda: decode_batch_doc(batch_doc(value=[1.0, value])), ok, "value[1]")


@given(n=st.integers(MAX_BATCH_READINGS - 1, MAX_BATCH_READINGS + 2))
@settings(max_examples=4, deadline=None)
def test_batch_readings_cap(n: int) -> None:
    doc = batch_doc(n)
    assert_verdict(lambda: decode_batch_doc(doc), n <= MAX_BATCH_READINGS, "seq_delta")


@given(size=st.integers(MAX_INFLATED_BYTES - 2, MAX_INFLATED_BYTES + 2))
@settings(max_examples=4, deadline=None)
def test_batch_inflated_bytes_cap(size: int) -> None:
    body = json.dumps(batch_doc()).encode()
    text = body[:-1] + b" " * (size - len(body)) + b"}"
    payload = zlib.compress(text, 9)  # a zlib bomb when large: ~16 kB inflating to 16 MiB
    call = lambda: decode(f"{PREFIX}/edge-01/batch", payload, PREFIX)  # noqa: E731
    assert_verdict(call, size <= MAX_INFLATED_BYTES, "")


@given(topic_device=st.sampled_from(["edge-01", "edge-02"]), depth=st.integers(3, 6))
def test_batch_device_and_depth(topic_device: str, depth: int) -> None:
    unit: Any = "%"
    for _ in range(depth - 3):
        unit = [unit]
    doc = batch_doc(streams=[["s", "m", unit]])
    ok = depth == 3 and topic_device == "edge-01"
    field = "" if depth > 3 else "device"
    assert_verdict(lambda: decode_batch_doc(doc, topic_device), ok, field)


@pytest.mark.parametrize("levels", [30_000, 100_000])
@pytest.mark.parametrize("kind", ["edge-01/s/m", "edge-01/batch", "edge-01/spool"])
def test_deep_nesting_is_a_wire_error_on_every_kind(kind: str, levels: int) -> None:
    deep = b"[" * levels + b"]" * levels
    payload = zlib.compress(deep) if kind.endswith("batch") else deep
    too_large = len(deep) > MAX_MESSAGE_BYTES and not kind.endswith("batch")
    with pytest.raises(WireError, match="is larger than" if too_large else "nests deeper than"):
        decode(f"{PREFIX}/{kind}", payload, PREFIX)


names_ok = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
units_ok = st.none() | st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=16)
ts_ok = st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999)
values_ok = st.floats(allow_nan=False, allow_infinity=False)


@given(
    seq=st.integers(1, MAX64),
    device=names_ok,
    sensor=names_ok,
    unit=units_ok,
    value=values_ok,
    ts_us=ts_ok,
    epoch=st.from_regex(r"[0-9a-f]{1,32}", fullmatch=True),
    replay=st.booleans(),
)
def test_render_then_decode_is_the_identity(
    seq: int,
    device: str,
    sensor: str,
    unit: str | None,
    value: float,
    ts_us: int,
    epoch: str,
    replay: bool,
) -> None:
    r = StoredReading(seq, device, sensor, "m", value, unit, ts_us, False)
    got = decode(f"{PREFIX}/{device}/{sensor}/m", render_payload(r, epoch, replay), PREFIX)
    assert got.kind is TopicKind.READING
    [d] = got.readings
    assert (d.id, d.seq, d.device, d.sensor, d.metric, d.unit, d.ts_us, d.replay) == (
        f"{device}:{epoch}:{seq}",
        seq,
        device,
        sensor,
        "m",
        unit,
        ts_us,
        replay,
    )
    assert d.value == value and not d.time_synced


@given(
    seqs=st.lists(st.integers(1, MAX64), min_size=1, max_size=30),
    unit=units_ok,
    values=st.lists(values_ok, min_size=30, max_size=30),
    ts=st.lists(ts_ok, min_size=30, max_size=30),
)
def test_encode_then_decode_batch_is_the_identity(
    seqs: list[int], unit: str | None, values: list[float], ts: list[int]
) -> None:
    rows = [row(s, unit, values[i], ts[i]) for i, s in enumerate(seqs)]
    replay = [i % 2 == 0 for i in range(len(rows))]
    got = decode(f"{PREFIX}/edge-01/batch", encode(rows, "edge-01", "ab12", replay), PREFIX)
    assert [(d.seq, d.value, d.unit, d.ts_us, d.replay) for d in got.readings] == [
        (r.seq, r.value, r.unit, r.ts_us, f) for r, f in zip(rows, replay, strict=True)
    ]
    assert {d.id for d in got.readings} == {f"edge-01:ab12:{s}" for s in seqs}
    assert datetime.fromisoformat(got.readings[0].ts).tzinfo == UTC
