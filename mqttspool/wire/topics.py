"""Every topic on the wire: built for the producer, classified for the consumer.

Below ``{prefix}/`` (which may itself hold ``/``):

* ``{device}/{sensor}/{metric}``: one reading (per-reading payload);
* ``{device}/batch``: a zlib batch of readings;
* ``{device}/status``: retained ``online``/``offline``;
* ``{device}/spool``: the retained spool snapshot;
* ``{device}/{sensor}/{metric}/state``: Home Assistant's latest value.

:func:`classify_topic` judges by the shape below the prefix, never by a
level's name alone, so a sensor called ``status`` or a metric called
``state`` is still a reading.
"""

from __future__ import annotations

import enum


class TopicKind(enum.Enum):
    """What a topic under ``{prefix}/`` carries, judged by its levels."""

    READING = "reading"  # {device}/{sensor}/{metric}
    STATUS = "status"  # {device}/status: online/offline
    SPOOL = "spool"  # {device}/spool: the retained spool snapshot
    STATE = "state"  # {device}/{sensor}/{metric}/state: Home Assistant's latest value
    BATCH = "batch"  # {device}/batch: a zlib batch payload
    OTHER = "other"  # any other shape below the prefix


_DEVICE_TOPICS = {"status": TopicKind.STATUS, "spool": TopicKind.SPOOL, "batch": TopicKind.BATCH}


def reading_topic(prefix: str, device: str, sensor: str, metric: str) -> str:
    """``{prefix}/{device}/{sensor}/{metric}``."""
    return f"{prefix}/{device}/{sensor}/{metric}"


def batch_topic(prefix: str, device: str) -> str:
    """``{prefix}/{device}/batch``."""
    return f"{prefix}/{device}/batch"


def status_topic(prefix: str, device: str) -> str:
    """``{prefix}/{device}/status`` (retained online/offline)."""
    return f"{prefix}/{device}/status"


def spool_topic(prefix: str, device: str) -> str:
    """``{prefix}/{device}/spool`` (retained backlog snapshot)."""
    return f"{prefix}/{device}/spool"


def ha_state_topic(prefix: str, device: str, sensor: str, metric: str) -> str:
    """``{prefix}/{device}/{sensor}/{metric}/state``: the retained latest live value."""
    return f"{prefix}/{device}/{sensor}/{metric}/state"


def classify_topic(topic: str, prefix: str) -> TopicKind:
    """Classify ``topic`` by its depth and level positions below ``prefix``.

    A topic outside the prefix (``watch --topic`` elsewhere) is taken as a
    reading: the payload decides.
    """
    rest = topic.removeprefix(f"{prefix}/")
    if rest == topic:
        return TopicKind.READING
    levels = rest.split("/")
    if len(levels) == 3:
        return TopicKind.READING
    if len(levels) == 2:
        return _DEVICE_TOPICS.get(levels[1], TopicKind.OTHER)
    if len(levels) == 4 and levels[3] == "state":
        return TopicKind.STATE
    return TopicKind.OTHER


def topic_device(topic: str, prefix: str) -> str | None:
    """The device level of a topic under ``prefix``; None outside it."""
    rest = topic.removeprefix(f"{prefix}/")
    if rest == topic:
        return None
    return rest.split("/", 1)[0]


render_topic = reading_topic  # the public name (``mqttspool.render_topic``)
