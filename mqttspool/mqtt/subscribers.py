"""The subscribers of ``watch`` (:class:`Subscriber`) and ``ingest`` (:class:`AckingSubscriber`).

Both keep one paho client whose session outlives reconnects; paho reconnects
by itself, and connection news goes to a ``status`` queue of lines for the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from mqttspool.config import BrokerConfig
from mqttspool.mqtt.client import new_client
from mqttspool.mqtt.events import Will, describe_refusal, kind_for_connack
from mqttspool.runner import WakingQueue

SESSION_EXPIRY_WATCH_S = 3600


@dataclass(frozen=True)
class Received:
    """A message delivered to a :class:`Subscriber`."""

    topic: str
    payload: bytes
    retain: bool


class _SessionClient:
    """What ``watch``'s and ``ingest``'s subscribers share: one paho client with the
    broker's credentials, its network thread, and status lines for the CLI."""

    def __init__(self, config: BrokerConfig, client: mqtt.Client) -> None:
        self.config = config
        # Status lines for the CLI; its loop sets ``status.on_put`` to its wake-up.
        self.status: WakingQueue[str] = WakingQueue()
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        self._client = client

    def _connect(self, clean_start: bool | Literal[3], properties: Properties | None) -> None:
        """Connect in the background; paho reconnects by itself."""
        self._client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive,
            clean_start=clean_start,
            properties=properties,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect (a persistent session stays on the broker) and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def _refused(self, reason_code: ReasonCode) -> bool:
        """True (and a status line) when the broker refused the connection."""
        if reason_code.is_failure:
            kind = kind_for_connack(int(reason_code.value))
            hint = f"; {kind.hint}" if kind.hint else ""
            why = describe_refusal(kind, reason_code)
            self.status.put(f"broker {self.config.address()}: {why}{hint}")
        return bool(reason_code.is_failure)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        raise NotImplementedError

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        raise NotImplementedError

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.status.put(f"disconnected from {self.config.address()}: {reason_code}")


class Subscriber(_SessionClient):
    """A QoS 1 subscriber whose session outlives reconnects (for ``watch``).

    MQTT v5 with a session expiry interval, so messages sent while the link
    was down are delivered after the reconnect.
    """

    def __init__(self, config: BrokerConfig, client_id: str, topic: str) -> None:
        self.topic = topic
        self.messages: WakingQueue[Received] = WakingQueue()  # watch's loop wakes on each
        password = config.resolved_password()
        client = new_client(config, client_id, password=password, persistent=True)
        super().__init__(config, client)

    def start(self) -> None:
        """Connect in the background; reconnects by itself."""
        props = None
        if self.config.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_WATCH_S
        self._connect(mqtt.MQTT_CLEAN_START_FIRST_ONLY, props)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._refused(reason_code):
            return
        client.subscribe(self.topic, qos=1)
        self.status.put(f"connected to {self.config.address()}, subscribed to {self.topic}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))


@dataclass(frozen=True)
class Delivery:
    """A QoS 1 message held unacknowledged until :meth:`AckingSubscriber.ack` (for ``ingest``).

    ``connection`` numbers the connection it came on: after a reconnect the
    broker resends every unacknowledged message of the session, so an ack for
    an older connection is skipped (the resent copy is acknowledged instead).
    """

    connection: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    retain: bool


class AckingSubscriber(_SessionClient):
    """A subscriber with a persistent MQTT v5 session that acknowledges on request only.

    paho's manual-ack mode: a PUBACK goes out when :meth:`ack` is called, so a
    consumer acknowledges a message after it is durably stored and a crash in
    between makes the broker resend it (the session, by ``client_id``, outlives
    the process for ``session_expiry`` seconds).
    """

    def __init__(
        self,
        config: BrokerConfig,
        client_id: str,
        topics: list[str],
        session_expiry: int,
        will: Will | None = None,
    ) -> None:
        self.client_id = client_id
        self.topics = topics
        self.session_expiry = session_expiry
        self.messages: WakingQueue[Delivery] = WakingQueue()  # ingest's loop wakes on each
        # Told True after a successful SUBACK, False when the connection is lost.
        self.on_subscribed: Callable[[bool], None] = lambda subscribed: None
        self._connection = 0
        password = config.resolved_password()
        client = new_client(
            config, client_id, password=password, manual_ack=True, will=will, force_v5=True
        )
        client.on_subscribe = self._on_subscribe
        super().__init__(config, client)

    def start(self) -> None:
        """Connect in the background (resuming the session); reconnects by itself."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry
        self._connect(False, props)

    def publish_retained(self, topic: str, payload: bytes, timeout: float = 5.0) -> bool:
        """Publish a retained QoS 1 message; True once the broker acknowledged it within
        ``timeout`` s (0: do not wait, e.g. from a callback on paho's own thread)."""
        info = self._client.publish(topic, payload, qos=1, retain=True)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS or timeout <= 0:
            return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return bool(info.is_published())

    def ack(self, delivery: Delivery) -> None:
        """Send the PUBACK for ``delivery`` (skipped if it came on an earlier connection)."""
        if delivery.qos > 0 and delivery.connection == self._connection:
            self._client.ack(delivery.mid, delivery.qos)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._refused(reason_code):
            return
        self._connection += 1
        client.subscribe([(topic, 1) for topic in self.topics])
        resumed = "resumed session" if flags.session_present else "new session"
        self.status.put(f"connected to {self.config.address()} as {self.client_id} ({resumed})")

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [t for t, rc in zip(self.topics, reason_codes, strict=False) if rc.is_failure]
        if refused:
            self.status.put(f"broker {self.config.address()} refused subscription(s): {refused}")
        else:
            self.status.put(f"subscribed to {', '.join(self.topics)}")
            self.on_subscribed(True)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
        self.on_subscribed(False)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(
            Delivery(self._connection, msg.mid, msg.qos, msg.topic, bytes(msg.payload), msg.retain)
        )
