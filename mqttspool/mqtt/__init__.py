"""All paho-mqtt code lives in this package; the rest of mqttspool sees plain events.

- :mod:`~mqttspool.mqtt.events`: what a connection reports (events, failure kinds,
  the :class:`Publisher` protocol); no paho.
- :mod:`~mqttspool.mqtt.client`: the one paho client factory and client-id rule.
- :mod:`~mqttspool.mqtt.publisher`: :class:`MqttPublisher`, the bridge's connection.
- :mod:`~mqttspool.mqtt.subscribers`: ``watch``'s and ``ingest``'s subscribers.
"""

from __future__ import annotations

from mqttspool.mqtt.client import _tls_context, check_tls_files, client_id_for, new_client
from mqttspool.mqtt.events import (
    Acked,
    Connected,
    ConnectFailed,
    ConsumerState,
    Disconnected,
    Event,
    Failure,
    FailureKind,
    Publisher,
    PublishProperties,
    Will,
    describe_refusal,
    kind_for_connack,
    kind_for_disconnect,
    kind_for_exception,
)
from mqttspool.mqtt.publisher import CONNECT_TIMEOUT_S, MqttPublisher
from mqttspool.mqtt.subscribers import (
    AckingSubscriber,
    Delivery,
    Received,
    Subscriber,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "Acked",
    "AckingSubscriber",
    "ConnectFailed",
    "Connected",
    "ConsumerState",
    "Delivery",
    "Disconnected",
    "Event",
    "Failure",
    "FailureKind",
    "MqttPublisher",
    "PublishProperties",
    "Publisher",
    "Received",
    "Subscriber",
    "Will",
    "_tls_context",
    "check_tls_files",
    "client_id_for",
    "describe_refusal",
    "kind_for_connack",
    "kind_for_disconnect",
    "kind_for_exception",
    "new_client",
]
