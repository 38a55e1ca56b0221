"""Fast paths on the sample -> validate -> append -> render -> publish path give the
same results as the slow, obvious code they replace (bench/cost.py measures the gain)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from fakes.clock import FakeClock, FakeClockSync
from fakes.validator import CountingValidator
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

import mqttspool.sampler as sampler_module
from mqttspool.counters import Counters
from mqttspool.errors import SensorError
from mqttspool.mqtt import PublishProperties
from mqttspool.mqtt.publisher import _paho_properties
from mqttspool.reading import (
    Reading,
    StoredReading,
    _second_text,
    format_ts,
    from_us,
    reading_error_from,
)
from mqttspool.sampler import Sampler
from mqttspool.sensors.base import Measurement
from mqttspool.sensors.simulated import SimulatedSensor
from mqttspool.spool import Spool
from mqttspool.wire.payload import render_payload

# ------------------------------------------------------------ MQTT v5 properties


def _fresh_paho(properties: PublishProperties) -> Properties:
    """What paho would be handed without the cache: a new Properties object."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if properties.content_type is not None:
        props.ContentType = properties.content_type
    if properties.user_properties:
        props.UserProperty = list(properties.user_properties)
    if properties.topic_alias is not None:
        props.TopicAlias = properties.topic_alias
    return props


def _packed(props: Properties) -> bytes:
    return bytes(props.pack())  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    "properties",
    [
        PublishProperties(topic_alias=1),
        PublishProperties(topic_alias=65535),
        PublishProperties("application/x-mqttspool-batch", (("encoding", "zlib"),)),
        PublishProperties("text/plain", (("a", "1"), ("b", "2")), topic_alias=7),
    ],
)
def test_publish_properties_pack_like_a_fresh_paho_object(properties: PublishProperties) -> None:
    ours = _paho_properties(properties)
    assert ours is not None
    fresh = _fresh_paho(properties)
    assert _packed(ours) == _packed(fresh)
    assert _packed(ours) == _packed(fresh)  # packed once, same bytes every time
    assert str(ours) == str(fresh)  # what paho's debug log shows


def test_publish_properties_are_built_once_per_distinct_set() -> None:
    first = _paho_properties(PublishProperties(topic_alias=3))
    again = _paho_properties(PublishProperties(topic_alias=3))
    other = _paho_properties(PublishProperties(topic_alias=4))
    assert first is again
    assert other is not first
    assert _paho_properties(None) is None


# ------------------------------------------------------------------- payload


def _format_ts_reference(ts_us: int) -> str:
    """The documented timestamp, straight from datetime (no cache)."""
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_us)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
    frac = ts_us % 1_000_000
    return f"{text}.{frac // 1000:03d}Z" if frac % 1000 == 0 else f"{text}.{frac:06d}Z"


@given(st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999))
def test_timestamp_text_matches_datetime_for_any_microsecond(ts_us: int) -> None:
    assert format_ts(ts_us) == _format_ts_reference(ts_us)


def test_readings_of_one_second_share_the_timestamp_text() -> None:
    second = 1_780_000_000 * 1_000_000
    rows = [
        StoredReading(seq, "dev", "s0", "temperature", 21.5, "°C", second + seq * 1000, True)
        for seq in range(1, 11)
    ]
    before = _second_text.cache_info()
    payloads = [render_payload(row, "0badcafe", False) for row in rows]
    after = _second_text.cache_info()
    assert after.misses - before.misses == 1  # one datetime for ten readings
    assert [json.loads(p)["ts"] for p in payloads] == [
        f"2026-05-28T20:26:40.{seq:03d}Z" for seq in range(1, 11)
    ]
    assert {json.loads(p)["unit"] for p in payloads} == {"°C"}


# --------------------------------------------------------- sampled readings


def _sampler(clock: FakeClock) -> Sampler:
    # _readings touches neither the spool nor the sensors' read().
    sensor = SimulatedSensor("s0", 1.0)
    return Sampler([sensor], "dev-1", cast(Spool, None), Counters(), clock, FakeClockSync())


def _readings_one_by_one(sampler: Sampler, measurements: list[Measurement]) -> list[Reading]:
    """The reference: one Reading per measurement, the first error names its field."""
    ts = from_us(sampler.clock.wall_us())
    try:
        return [
            Reading(
                device=sampler.device,
                sensor="s0",
                metric=m.metric,
                value=m.value,
                unit=m.unit,
                ts=ts,
                time_synced=True,
            )
            for m in measurements
        ]
    except ValidationError as exc:
        raise SensorError("s0", f"invalid reading: {reading_error_from(exc)}") from exc


values = (
    st.floats() | st.integers(-(10**400), 10**400) | st.booleans() | st.text(max_size=5) | st.none()
)
metrics = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True) | st.text(max_size=70)
units = st.none() | st.text(max_size=20)
measurement_lists = st.lists(st.builds(Measurement, metrics, values, units), max_size=4)


@given(measurement_lists)
def test_a_sensors_readings_are_accepted_and_rejected_as_one_by_one(
    measurements: list[Measurement],
) -> None:
    sampler = _sampler(FakeClock())
    sensor = sampler.sensors[0]
    try:
        expected = _readings_one_by_one(sampler, measurements)
    except SensorError as exc:
        with pytest.raises(SensorError) as raised:
            sampler._readings(sensor, measurements, True)
        assert str(raised.value) == str(exc)
        return
    assert sampler._readings(sensor, measurements, True) == expected


def test_a_sensors_valid_readings_take_one_validator_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = CountingValidator(sampler_module._READINGS)
    monkeypatch.setattr(sampler_module, "_READINGS", spy)
    sampler = _sampler(FakeClock())
    measurements = [Measurement("temperature", 21.5, "°C"), Measurement("humidity", 40.0, "%RH")]
    readings = sampler._readings(sampler.sensors[0], measurements, True)
    assert spy.calls == [2]
    assert [(r.metric, r.value, r.unit) for r in readings] == [
        ("temperature", 21.5, "°C"),
        ("humidity", 40.0, "%RH"),
    ]


def test_a_bad_reading_names_its_field_not_its_position() -> None:
    sampler = _sampler(FakeClock())
    measurements = [Measurement("temperature", 21.5, "°C"), Measurement("humidity", math.nan, "%")]
    with pytest.raises(SensorError) as raised:
        sampler._readings(sampler.sensors[0], measurements, True)
    assert str(raised.value) == (
        "sensor s0: invalid reading: value: must be a finite number"
        " (NaN and infinity are rejected) (got nan)"
    )
