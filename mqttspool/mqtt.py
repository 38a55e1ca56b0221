"""All paho-mqtt code lives here; the rest of mqttspool sees plain events.

:class:`MqttPublisher` makes a fresh paho client for every connection attempt
(clean start), so the spool, not paho's memory, owns redelivery: when a
connection dies, its client and every message paho still holds are thrown
away and the bridge resends from the spool.

paho calls ``on_publish`` while holding its internal message lock, which
``publish()`` also takes; so the callbacks here only append an event to a
``queue.SimpleQueue`` and set a wake-up flag. They never touch SQLite or a
lock that is held around ``publish()``.
"""

from __future__ import annotations

import enum
import logging
import queue
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from mqttspool.config import BrokerConfig
from mqttspool.errors import ConfigError
from mqttspool.gate import consumer_online
from mqttspool.runner import WakingQueue

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0


class _QuietShutdown(logging.Filter):
    """paho's loop thread logs an ERROR when it races a deliberate disconnect; that is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Client is not connected.")


_PAHO_LOGGER = logging.getLogger("mqttspool.paho")
_PAHO_LOGGER.addFilter(_QuietShutdown())
SESSION_EXPIRY_WATCH_S = 3600


# ------------------------------------------------------------------ events


class FailureKind(enum.Enum):
    """Why a connection attempt failed or a connection ended.

    Every kind is retried with backoff (a blackout of days must cost nothing but
    disk); :attr:`configuration` marks the kinds that will not heal by waiting,
    so the bridge logs them as errors with a hint naming the setting to fix.
    """

    NETWORK = "network"  # TCP refused/reset/unreachable, DNS, link lost without a reason
    TIMEOUT = "timeout"  # no CONNACK, keepalive or PUBACK in time
    TLS = "tls"  # handshake or certificate verification failed
    NOT_AUTHORIZED = "not_authorized"  # bad user name/password, not authorized, bad client id
    SESSION_TAKEN_OVER = "session_taken_over"  # another client connected with our client id
    PROTOCOL = "protocol"  # the broker rejected what we sent (e.g. 0x93 Receive Maximum)
    REFUSED = "refused"  # any other reason code the broker gave (server busy, shutting down)
    CLOSED = "closed"  # we closed the connection ourselves (:meth:`Publisher.close`)

    @property
    def configuration(self) -> bool:
        """True for the kinds an operator has to fix; waiting does not help."""
        return self in _CONFIGURATION_KINDS

    @property
    def hint(self) -> str:
        """What to check, for the log line (empty for transient kinds)."""
        return _HINTS.get(self, "")


_CONFIGURATION_KINDS = frozenset(
    {
        FailureKind.TLS,
        FailureKind.NOT_AUTHORIZED,
        FailureKind.SESSION_TAKEN_OVER,
        FailureKind.PROTOCOL,
    }
)
_HINTS = {
    FailureKind.TLS: "check broker.tls (ca_file, cert_file, key_file) and that broker.host"
    " matches the broker's certificate",
    FailureKind.NOT_AUTHORIZED: "check broker.username, broker.password/password_file and"
    " the broker's ACL",
    FailureKind.SESSION_TAKEN_OVER: "another client connected with the same client id;"
    " give every device its own broker.client_id (or device.id)",
    FailureKind.PROTOCOL: "the broker rejected a packet mqttspool sent; check broker.protocol"
    " and the broker's limits",
}

# MQTT 5 reason codes (CONNACK/DISCONNECT) the kinds are derived from.
RC_SUCCESS = 0x00
RC_PROTOCOL_ERROR = 0x82
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_SESSION_TAKEN_OVER = 0x8E
_RC_NOT_AUTHORIZED = frozenset({0x85, 0x86, 0x87, 0x8C})  # client id, credentials, auth method
_RC_PROTOCOL = frozenset({0x81, 0x82, 0x84, 0x93, 0x94, 0x95, 0x9A, 0x9B})


def kind_for_connack(reason_code: int) -> FailureKind:
    """The kind of a CONNACK failure reason code."""
    if reason_code in _RC_NOT_AUTHORIZED:
        return FailureKind.NOT_AUTHORIZED
    if reason_code in _RC_PROTOCOL:
        return FailureKind.PROTOCOL
    return FailureKind.REFUSED


def describe_refusal(kind: FailureKind, reason_code: object) -> str:
    """Why the broker refused a connection, in words; credentials are named as such."""
    if kind is FailureKind.NOT_AUTHORIZED:
        return f"not authorized ({reason_code}): the broker refused this login"
    return f"connection refused: {reason_code}"


def kind_for_disconnect(reason_code: int, from_broker: bool) -> FailureKind:
    """The kind of a lost connection: a broker's DISCONNECT, or paho's local reason."""
    if reason_code == RC_KEEP_ALIVE_TIMEOUT:
        return FailureKind.TIMEOUT
    if not from_broker:
        if reason_code == RC_SUCCESS:
            return FailureKind.CLOSED  # paho reports our own disconnect() as success
        return FailureKind.PROTOCOL if reason_code == RC_PROTOCOL_ERROR else FailureKind.NETWORK
    if reason_code == RC_SESSION_TAKEN_OVER:
        return FailureKind.SESSION_TAKEN_OVER
    return kind_for_connack(reason_code)


def kind_for_exception(exc: BaseException) -> FailureKind:
    """The kind of an exception raised while opening the connection."""
    if isinstance(exc, ssl.SSLError):
        return FailureKind.TLS
    if isinstance(exc, TimeoutError):
        return FailureKind.TIMEOUT
    return FailureKind.NETWORK


@dataclass(frozen=True)
class Connected:
    """CONNACK success. ``receive_maximum`` is the broker's (None for MQTT 3.1.1);
    ``topic_alias_maximum`` the highest topic alias it accepts (0: none, and always
    0 for MQTT 3.1.1)."""

    generation: int
    receive_maximum: int | None
    topic_alias_maximum: int = 0


@dataclass(frozen=True)
class Failure:
    """What went wrong with a connection: its kind, a readable reason, the MQTT code if any."""

    generation: int
    kind: FailureKind
    reason: str
    reason_code: int | None = None


@dataclass(frozen=True)
class ConnectFailed(Failure):
    """The attempt failed before or at CONNACK; ``reason_code`` is the CONNACK's, if any."""


@dataclass(frozen=True)
class Disconnected(Failure):
    """An established connection ended; ``reason_code`` is the DISCONNECT's, if any."""


@dataclass(frozen=True)
class Acked:
    """PUBACK for ``mid`` with its reason code (0 for MQTT 3.1.1)."""

    generation: int
    mid: int
    reason_code: int
    reason: str


@dataclass(frozen=True)
class ConsumerState:
    """The retained consumer-state topic (``bridge.consumer_topic``) says online or not."""

    generation: int
    online: bool


Event = Connected | ConnectFailed | Disconnected | Acked | ConsumerState


@dataclass(frozen=True)
class PublishProperties:
    """MQTT v5 PUBLISH properties the bridge sets; a 3.1.1 connection sends none of them.

    ``topic_alias`` (1..the broker's Topic Alias Maximum) maps the topic for the rest
    of this connection; a publish with an empty topic and an alias uses the mapping.
    """

    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    topic_alias: int | None = None


@dataclass(frozen=True)
class Will:
    """The last will: retained ``payload`` on ``topic``."""

    topic: str
    payload: bytes


class Publisher(Protocol):
    """What the bridge needs from a broker connection (a fake implements it in tests)."""

    @property
    def broker(self) -> str:
        """``host:port`` for messages."""
        ...

    def connect(self) -> int:
        """Start a connection attempt; returns its generation. Events report the result."""
        ...

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: PublishProperties | None = None,
    ) -> int | None:
        """Queue a message; returns its mid, or None when not connected. ``properties``
        are sent on MQTT v5 and ignored on 3.1.1 (where an empty topic is never valid)."""
        ...

    def events(self) -> list[Event]:
        """Every event since the last call (non-blocking)."""
        ...

    def wait(self, timeout: float) -> None:
        """Block until an event arrives or ``timeout`` seconds pass."""
        ...

    def close(self) -> None:
        """Disconnect (if connected) and drop the client."""
        ...


# --------------------------------------------------------------- publisher


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
        _check_tls_files(config)
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._client: mqtt.Client | None = None
        self._connect_thread: threading.Thread | None = None
        self._generation = 0

    @property
    def broker(self) -> str:
        """``host:port``."""
        return self.config.address()

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

    def events(self) -> list[Event]:
        """Drain the event queue."""
        out: list[Event] = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float) -> None:
        """Wait for an event (or ``timeout``)."""
        if self._events.empty():
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
        self._wake.set()

    def _make_client(self, gen: int) -> mqtt.Client:
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
        client.on_publish = _on_publish(self._emit, gen)
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


def _paho_properties(properties: PublishProperties | None) -> Properties | None:
    if properties is None:
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if properties.content_type is not None:
        props.ContentType = properties.content_type
    if properties.user_properties:
        props.UserProperty = list(properties.user_properties)
    if properties.topic_alias is not None:
        props.TopicAlias = properties.topic_alias
    return props


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
        emit(Acked(gen, mid, int(reason_code.value), str(reason_code)))

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


def _check_tls_files(config: BrokerConfig) -> None:
    tls = config.tls
    if not tls.enabled:
        return
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(
                    f"broker.tls.{key}", [(f"broker.tls.{key}", f"cannot read {path}: {exc}")]
                ) from exc


def _tls_context(config: BrokerConfig) -> ssl.SSLContext:
    tls = config.tls
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file or None)
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
    if tls.insecure:
        logger.warning(
            "broker %s: TLS hostname verification is OFF (broker.tls.insecure = true);"
            " anyone holding a certificate from this CA can impersonate the broker",
            config.address(),
        )
        ctx.check_hostname = False
    return ctx


def client_id_for(configured: str, *parts: str) -> str:
    """The configured client id, or ``mqttspool-<parts...>`` (``mqttspool-edge-01``,
    ``mqttspool-ingest-<group>-<host>``): the one naming rule of every client."""
    return configured or "-".join(("mqttspool", *parts))


def new_client(
    config: BrokerConfig,
    client_id: str,
    *,
    password: SecretStr | None,
    persistent: bool = False,
    manual_ack: bool = False,
    will: Will | None = None,
    force_v5: bool = False,
    reconnect_on_failure: bool = True,
) -> mqtt.Client:
    """The one place a paho client is built: protocol, session, credentials, TLS, will.

    ``persistent``: the session outlives the connection (MQTT 3.1.1 clean
    session off; v5 sessions are set per connect). ``password`` is resolved
    once by the caller (``broker.password_file`` is read at start, not per
    connection). TLS files are checked here, so a missing one is a
    :class:`ConfigError` naming the setting.
    """
    v5 = force_v5 or config.protocol == "5"
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else not persistent,
        manual_ack=manual_ack,
        reconnect_on_failure=reconnect_on_failure,
    )
    if config.username:
        client.username_pw_set(config.username, password.get_secret_value() if password else None)
    if config.tls.enabled:
        _check_tls_files(config)
        client.tls_set_context(_tls_context(config))
        if config.tls.insecure:
            client.tls_insecure_set(True)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=1, retain=True)
    return client


# ---------------------------------------------------------------- subscriber


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


# ---------------------------------------------------- acknowledging subscriber


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
