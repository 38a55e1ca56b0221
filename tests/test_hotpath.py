"""Fast paths on the sample -> validate -> append -> render -> publish path give the
same results as the slow, obvious code they replace (bench/cost.py measures the gain)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqttspool.mqtt import PublishProperties, _paho_properties
from mqttspool.reading import StoredReading, _second_text, format_ts, render_payload

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
