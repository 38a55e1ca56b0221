"""The bridge's broker connection: :class:`MqttPublisher` on paho-mqtt 2.x.

It makes a fresh paho client for every connection attempt (clean start), so the
spool, not paho's memory, owns redelivery: when a connection dies, its client
and every message paho still holds are thrown away and the bridge resends from
the spool.

paho calls ``on_publish`` while holding its internal message lock, which
``publish()`` also takes; so the callbacks here only append an event to a
``queue.SimpleQueue`` and set a wake-up flag. They never touch SQLite or a
lock that is held around ``publish()``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from mqttspool.config import BrokerConfig
from mqttspool.gate import consumer_online
from mqttspool.mqtt.client import check_tls_files, new_client
from mqttspool.mqtt.events import (
    PUBACK_FAILURE,
    Acked,
    Connected,
    ConnectFailed,
    ConsumerState,
    Disconnected,
    Event,
    FailureKind,
    PublishProperties,
    Will,
    describe_refusal,
    kind_for_connack,
    kind_for_disconnect,
    kind_for_exception,
)
from mqttspool.mqtt.fastack import Client

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0


class _QuietShutdown(logging.Filter):
    """paho's loop thread logs an ERROR when it races a deliberate disconnect; that is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Client is not connected.")


_PAHO_LOGGER = logging.getLogger("mqttspool.paho")


class MqttPublisher:
    """A :class:`Publisher` on paho-mqtt 2.x (MQTT v5 by default, 3.1.1 selectable)."""

    def __init__(
        self, config: BrokerConfig, client_id: str, will: Will | None, consumer_topic: str = ""
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.will = will
        self.consumer_topic = consumer_topic  # subscribed on every connect when set
        self._password = config.resolved_password()
        check_tls_files(config)
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._acks_wake = True  # see Publisher.acks_wake
        self._client: Client | None = None
        self._connect_thread: threading.Thread | None = None
        self._generation = 0

    @property
    def broker(self) -> str:
        """``host:port``."""
        return self.config.address()

    @property
    def acks_wake(self) -> bool:
        """Whether a PUBACK ends :meth:`wait` (see :class:`Publisher`)."""
        return self._acks_wake

    @acks_wake.setter
    def acks_wake(self, on: bool) -> None:
        self._acks_wake = on
        # Acks queued while they did not wake must wake the waiter now. paho's thread
        # reads the flag after its put (_emit_ack), so one side sees the other.
        if on and not self._events.empty() and not self._wake.is_set():
            self._wake.set()

    def connect(self) -> int:
        """Make a fresh client and connect it in the background.

        The connect itself never blocks the caller, but :meth:`close` of the previous
        client does: it joins that client's connect thread (up to CONNECT_TIMEOUT_S + 1 s
        while a TCP connect hangs) and its network thread. The bridge calls this from its
        own thread, so a reconnect can hold its step that long (timers wait, nothing is
        lost: events queue up).
        """
        self.close()
        self._generation += 1
        gen = self._generation
        client = self._make_client(gen)
        self._client = client
        self._connect_thread = threading.Thread(
            target=self._connect_and_loop, args=(client, gen), name="mqtt-connect", daemon=True
        )
        self._connect_thread.start()
        return gen

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: PublishProperties | None = None,
    ) -> int | None:
        """Hand one message to paho; returns its mid (on_publish may already have fired).

        paho 2.2 sends an empty topic as is on MQTT v5 (with a TopicAlias property the
        broker resolves it) and keeps no alias state of its own; a fresh client per
        connection means paho never resends such a message on another connection.
        """
        client = self._client
        if client is None:
            return None
        props = _paho_properties(properties) if self.config.protocol == "5" else None
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        return int(info.mid)

    def corked(self) -> AbstractContextManager[None]:
        """Publishes in the block wake paho's network thread once (see Publisher)."""
        client = self._client
        return contextlib.nullcontext() if client is None else client.corked()

    def events(self) -> list[Event]:
        """Drain the event queue."""
        out: list[Event] = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float) -> None:
        """Wait for an event that wakes (or ``timeout``).

        Not for a queued event: PUBACKs queued while ``acks_wake`` was off wait for
        the next wake-up. Every other event sets the flag after its put, and the flag
        is cleared before the caller drains the queue, so none is missed.
        """
        self._wake.wait(timeout)
        self._wake.clear()

    def wake(self) -> None:
        """Interrupt :meth:`wait` (new rows in the spool, shutdown...)."""
        self._wake.set()

    def close(self) -> None:
        """Disconnect and stop the network thread of the current client."""
        client, self._client = self._client, None
        thread, self._connect_thread = self._connect_thread, None
        if thread is not None:
            thread.join(CONNECT_TIMEOUT_S + 1)
        if client is not None:
            client.disconnect()
            client.loop_stop()

    # -- internals (callbacks run on paho's thread: enqueue only) --

    def _emit(self, event: Event) -> None:
        self._events.put(event)
        # Setting a set Event still takes its lock and notifies; a PUBACK per message
        # makes that measurable. The waiter clears the flag before it reads the queue.
        if not self._wake.is_set():
            self._wake.set()

    def _emit_ack(self, event: Event) -> None:
        self._events.put(event)  # without acks_wake: handled at the next wake-up
        if self._acks_wake and not self._wake.is_set():
            self._wake.set()

    def _make_client(self, gen: int) -> Client:
        # The bridge reconnects itself, with a fresh client each time.
        client = new_client(
            self.config,
            self.client_id,
            password=self._password,
            will=self.will,
            reconnect_on_failure=False,
        )
        # The bridge keeps its own window; paho's limit of 20 would silently cap it and
        # any positive limit makes paho scan its queue on every PUBACK.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.connect_timeout = CONNECT_TIMEOUT_S
        if _PAHO_LOGGER.isEnabledFor(logging.DEBUG):
            client.enable_logger(_PAHO_LOGGER)  # one log call per packet: debug only
        client.on_connect = _on_connect(self._emit, gen, self.consumer_topic)
        client.on_disconnect = _on_disconnect(self._emit, gen)
        client.on_publish = _on_publish(self._emit_ack, gen)
        if self.consumer_topic:
            client.on_message = _on_consumer_state(self._emit, gen)
            client.on_subscribe = _on_consumer_subscribe(self.consumer_topic, self.broker)
        return client

    def _connect_and_loop(self, client: mqtt.Client, gen: int) -> None:
        v5 = self.config.protocol == "5"
        try:
            client.connect(
                self.config.host,
                self.config.port,
                keepalive=self.config.keepalive,
                clean_start=True if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            )
        except ssl.SSLCertVerificationError as exc:
            reason = f"TLS certificate check failed: {exc.verify_message}"
            self._emit(ConnectFailed(gen, FailureKind.TLS, reason))
            return
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._emit(ConnectFailed(gen, kind_for_exception(exc), _describe_os_error(exc)))
            return
        client.loop_start()


PROPERTIES_CACHE = 256  # distinct PUBLISH property sets kept packed (one per topic alias)


def _paho_properties(properties: PublishProperties | None) -> Properties | None:
    if properties is None:
        return None
    return _packed_properties(properties)


@functools.lru_cache(maxsize=PROPERTIES_CACHE)
def _packed_properties(properties: PublishProperties) -> Properties:
    """paho's properties for ``properties``, built and packed once, then shared.

    paho's ``Properties`` is slow pure Python (every attribute set and every
    ``pack()`` rescans its table of names: ~70 µs per publish on the VM, a
    sixth of a reading's CPU), yet one topic alias' properties never change.
    paho only reads the object it is given (``pack()``, ``str()`` for its debug
    log), so one instance may serve every publish.
    """
    props = _PrePacked(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if properties.content_type is not None:
        props.ContentType = properties.content_type
    if properties.user_properties:
        props.UserProperty = list(properties.user_properties)
    if properties.topic_alias is not None:
        props.TopicAlias = properties.topic_alias
    props.freeze()
    return props


class _PrePacked(Properties):
    """paho ``Properties`` whose :meth:`pack` returns bytes computed once by :meth:`freeze`."""

    _packed: bytes | None = None

    def freeze(self) -> None:
        """Pack now; later :meth:`pack` calls return these bytes (set no property after)."""
        # Properties.__setattr__ accepts only MQTT property names.
        object.__setattr__(self, "_packed", super().pack())  # type: ignore[no-untyped-call]

    def pack(self) -> bytes:
        """The serialized properties (packed once)."""
        if self._packed is None:
            return bytes(super().pack())  # type: ignore[no-untyped-call]
        return self._packed


def _on_connect(emit: Callable[[Event], None], gen: int, consumer_topic: str) -> Any:
    def on_connect(
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            code = int(reason_code.value)
            kind = kind_for_connack(code)
            emit(ConnectFailed(gen, kind, describe_refusal(kind, reason_code), code))
            return
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties else None
        if client.protocol == MQTTProtocolVersion.MQTTv5 and receive_max is None:
            receive_max = 65535  # v5 default when the broker does not say
        alias_max = getattr(properties, "TopicAliasMaximum", 0) if properties else 0
        if consumer_topic:
            client.subscribe(consumer_topic, qos=1)
        emit(Connected(gen, receive_max, int(alias_max or 0)))

    return on_connect


def _on_consumer_state(emit: Callable[[Event], None], gen: int) -> Any:
    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        emit(ConsumerState(gen, consumer_online(bytes(msg.payload))))

    return on_message


def _on_consumer_subscribe(topic: str, broker: str) -> Any:
    def on_subscribe(
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(rc.is_failure for rc in reason_codes):
            logger.error(
                "broker %s refused the subscription to bridge.consumer_topic %r (%s):"
                " readings stay spooled; check the broker's ACL",
                broker,
                topic,
                ", ".join(str(rc) for rc in reason_codes),
            )

    return on_subscribe


def _on_disconnect(emit: Callable[[Event], None], gen: int) -> Any:
    def on_disconnect(
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        code = int(reason_code.value)
        kind = kind_for_disconnect(code, flags.is_disconnect_packet_from_server)
        emit(Disconnected(gen, kind, str(reason_code), code))

    return on_disconnect


def _on_publish(emit: Callable[[Event], None], gen: int) -> Any:
    def on_publish(
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        code = int(reason_code.value)
        # The name is only ever shown for a refusal (dead letters); naming costs a table scan.
        reason = str(reason_code) if code >= PUBACK_FAILURE else ""
        emit(Acked(gen, mid, code, reason, time.monotonic()))

    return on_publish


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on this port?)"
    if isinstance(exc, TimeoutError):
        return "connection timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
