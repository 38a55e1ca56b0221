"""Fast paths on the sample -> validate -> append -> render -> publish path give the
same results as the slow, obvious code they replace (bench/cost.py measures the gain)."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqttspool.mqtt import PublishProperties, _paho_properties

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
