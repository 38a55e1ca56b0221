"""The Reading model and the wire format: round trips, rejections, exact bytes."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttspool.errors import ReadingError
from mqttspool.reading import (
    Reading,
    StoredReading,
    format_ts,
    from_us,
    reading_id,
    to_us,
    validate_reading,
)
from mqttspool.wire.payload import parse_payload, render_payload
from mqttspool.wire.topics import render_topic

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"

names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=64)
timezones = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
aware_ts = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2999, 12, 31),
    timezones=timezones,
)
finite = st.floats(allow_nan=False, allow_infinity=False) | st.integers(
    min_value=-(2**53), max_value=2**53
)
units = st.none() | st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=16)
epochs = st.text(alphabet="0123456789abcdef", min_size=8, max_size=8)


def _valid_doc() -> dict[str, Any]:
    return {
        "device": "edge-01",
        "sensor": "bme280",
        "metric": "temperature",
        "value": 21.37,
        "unit": "°C",
        "ts": "2026-11-26T00:40:00.123Z",
        "time_synced": True,
    }


def _stored(reading: Reading, seq: int) -> StoredReading:
    return StoredReading(
        seq=seq,
        device=reading.device,
        sensor=reading.sensor,
        metric=reading.metric,
        value=reading.value,
        unit=reading.unit,
        ts_us=reading.ts_us,
        time_synced=reading.time_synced,
    )


@settings(max_examples=300, deadline=None)
@given(
    device=names,
    sensor=names,
    metric=names,
    value=finite,
    unit=units,
    ts=aware_ts,
    synced=st.booleans(),
    seq=st.integers(min_value=1, max_value=2**62),
    epoch=epochs,
    replay=st.booleans(),
)
def test_any_valid_reading_round_trips_through_the_payload(
    device: str,
    sensor: str,
    metric: str,
    value: float,
    unit: str | None,
    ts: datetime,
    synced: bool,
    seq: int,
    epoch: str,
    replay: bool,
) -> None:
    reading = Reading(
        device=device,
        sensor=sensor,
        metric=metric,
        value=value,
        unit=unit,
        ts=ts,
        time_synced=synced,
    )
    payload = render_payload(_stored(reading, seq), epoch, replay)
    msg = parse_payload(payload)

    assert msg.id == f"{device}:{epoch}:{seq}"
    assert msg.seq == seq
    assert msg.epoch == epoch
    assert msg.replay is replay
    back = msg.reading
    assert back == reading
    assert back.value == float(value)
    assert back.ts == ts  # aware datetimes compare as instants, to the microsecond
    assert back.ts.tzinfo == UTC
    assert back.ts_us == to_us(ts)
    assert back.unit == unit
    assert back.time_synced is synced
    # Compact JSON: no spaces between tokens, and the documented key order.
    doc = json.loads(payload)
    assert list(doc) == [
        "id",
        "seq",
        "device",
        "sensor",
        "metric",
        "value",
        "unit",
        "ts",
        "time_synced",
        "replay",
    ]
    assert doc["ts"].endswith("Z")


@given(ts_us=st.integers(min_value=0, max_value=32_503_680_000_000_000))
def test_format_ts_round_trips_microseconds(ts_us: int) -> None:
    text = format_ts(ts_us)
    parsed = datetime.fromisoformat(text)
    assert to_us(parsed) == ts_us
    assert from_us(ts_us) == parsed
    frac = text.split(".")[1].removesuffix("Z")
    assert len(frac) == (3 if ts_us % 1000 == 0 else 6)


def test_exact_payload_bytes_of_the_design_example() -> None:
    reading = validate_reading(_valid_doc())
    payload = render_payload(_stored(reading, 42), "9f3c2a1b", replay=False)
    assert (
        payload
        == (
            '{"id":"edge-01:9f3c2a1b:42","seq":42,"device":"edge-01","sensor":"bme280",'
            '"metric":"temperature","value":21.37,"unit":"°C","ts":"2026-11-26T00:40:00.123Z",'
            '"time_synced":true,"replay":false}'
        ).encode()
    )
    assert render_topic("mqttspool", "edge-01", "bme280", "temperature") == (
        "mqttspool/edge-01/bme280/temperature"
    )
    assert reading_id("edge-01", "9f3c2a1b", 42) == "edge-01:9f3c2a1b:42"


def test_microsecond_timestamp_is_rendered_with_six_digits() -> None:
    doc = _valid_doc() | {"ts": "2026-11-26T01:40:00.123456+01:00", "unit": None}
    reading = validate_reading(doc)
    payload = render_payload(_stored(reading, 7), "00000000", replay=True)
    assert b'"ts":"2026-11-26T00:40:00.123456Z"' in payload
    assert b'"unit":null' in payload
    assert b'"replay":true' in payload


def _rejected(doc: dict[str, Any]) -> ReadingError:
    with pytest.raises(ReadingError) as info:
        validate_reading(doc)
    return info.value


@pytest.mark.parametrize("field", ["device", "sensor", "metric"])
@pytest.mark.parametrize(
    "bad",
    ["", "a" * 65, "a/b", "a+b", "a#", "a b", "über", "abc\n", 7, None],
)
def test_bad_names_are_rejected_naming_the_field(field: str, bad: object) -> None:
    err = _rejected(_valid_doc() | {field: bad})
    assert err.field == field
    assert str(err).startswith(f"{field}: ")


@given(name=names)
def test_every_topic_level_name_is_accepted(name: str) -> None:
    reading = validate_reading(_valid_doc() | {"device": name, "sensor": name, "metric": name})
    assert (reading.device, reading.sensor, reading.metric) == (name, name, name)


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (True, "must be a number"),
        (False, "must be a number"),
        ("21.5", "must be a number"),
        (None, "must be a number"),
        ([1.0], "must be a number"),
    ],
)
def test_bad_values_are_rejected(bad: object, text: str) -> None:
    err = _rejected(_valid_doc() | {"value": bad})
    assert err.field == "value"
    assert text in err.message


@given(bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_values_never_validate(bad: float) -> None:
    with pytest.raises(ReadingError) as info:
        validate_reading(_valid_doc() | {"value": bad})
    assert info.value.field == "value"
    # The wire parser accepts JSON's NaN token, but the reading still refuses it.
    doc = json.loads(render_payload(_stored(validate_reading(_valid_doc()), 1), "e", False))
    doc["value"] = bad
    with pytest.raises(ReadingError) as info:
        parse_payload(json.dumps(doc).encode())
    assert info.value.field == "value"


@pytest.mark.parametrize(
    "bad",
    [
        "2026-11-26T00:40:00",
        "2026-11-26T00:40:00.123",
        datetime(2026, 11, 26, 0, 40),
    ],
)
def test_naive_timestamps_are_rejected(bad: object) -> None:
    err = _rejected(_valid_doc() | {"ts": bad})
    assert err.field == "ts"
    assert "must include a timezone" in err.message


@pytest.mark.parametrize("bad", [True, "yesterday", "2026-13-01T00:00:00Z", 12])
def test_unparseable_timestamps_are_rejected(bad: object) -> None:
    assert _rejected(_valid_doc() | {"ts": bad}).field == "ts"


def test_unit_longer_than_16_is_rejected() -> None:
    assert _rejected(_valid_doc() | {"unit": "x" * 17}).field == "unit"


def test_time_synced_must_be_a_boolean() -> None:
    assert _rejected(_valid_doc() | {"time_synced": "yes"}).field == "time_synced"


def test_unknown_field_is_rejected() -> None:
    err = _rejected(_valid_doc() | {"colour": "red"})
    assert err.field == "colour"
    assert err.message == "unknown field"


@pytest.mark.parametrize("missing", ["device", "sensor", "metric", "value", "ts"])
def test_missing_field_is_rejected(missing: str) -> None:
    doc = _valid_doc()
    del doc[missing]
    err = _rejected(doc)
    assert err.field == missing
    assert err.message == "field required"


def test_optional_fields_default() -> None:
    doc = _valid_doc()
    del doc["unit"]
    del doc["time_synced"]
    reading = validate_reading(doc)
    assert reading.unit is None
    assert reading.time_synced is True


def test_reading_is_immutable() -> None:
    reading = validate_reading(_valid_doc())
    with pytest.raises(Exception) as info:
        reading.value = 3.0
    assert "frozen" in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(seq=0), "seq"),
        (lambda d: d.update(seq="42"), "seq"),
        (lambda d: d.update(seq=True), "seq"),
        (lambda d: d.update(id="edge-01:9f3c2a1b"), "id"),
        (lambda d: d.update(id="other:9f3c2a1b:42"), "id"),
        (lambda d: d.update(id="edge-01:9f3c2a1b:43"), "id"),
        (lambda d: d.update(replay="no"), "replay"),
        (lambda d: d.pop("replay"), "replay"),
        (lambda d: d.update(value=None), "value"),
        (lambda d: d.update(ts="2026-11-26T00:40:00"), "ts"),
        (lambda d: d.update(extra=1), "extra"),
    ],
)
def test_parse_payload_rejects_bad_envelopes(mutate: Any, field: str) -> None:
    reading = validate_reading(_valid_doc())
    doc = json.loads(render_payload(_stored(reading, 42), "9f3c2a1b", replay=False))
    mutate(doc)
    with pytest.raises(ReadingError) as info:
        parse_payload(json.dumps(doc).encode())
    assert info.value.field == field


@pytest.mark.parametrize("payload", [b"not json", b"\xff\xfe", b"[1,2]", b"42"])
def test_parse_payload_rejects_non_objects(payload: bytes) -> None:
    with pytest.raises(ReadingError) as info:
        parse_payload(payload)
    assert info.value.field == ""
