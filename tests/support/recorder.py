"""A paho-mqtt subscriber that records everything it receives, for assertions.

The recorder is a persistent MQTT v5 session (clean start only on its first
connect, session expiry 300 s), so QoS 1 messages published while it is
disconnected — e.g. behind a proxy that was cut — are queued by the broker and
delivered when it reconnects. It resubscribes only when the broker has lost
its session (a killed broker without persistence).

    recorder = Recorder.for_broker(broker)   # or Recorder(host, port, ...)
    recorder.start()                         # returns after SUBACK
    ...
    recorder.wait_data_ids(100, timeout=10)  # 100 distinct reading ids
    assert recorder.duplicates() == {}
    recorder.stop()

Data payloads follow DESIGN.md (`{"id": "dev:epoch:seq", "seq": 42, ...}`);
status ("online"/"offline") and spool snapshots are recorded too but are not
"data" (no `id`/`seq`). Batches (`.../batch`, DESIGN.md "Batch payload") are
decoded on arrival with `mqttspool.batch.decode`: `data()`, `data_ids()`,
`seqs()`, `duplicates()` and `wait_data_ids()` count every reading in them
exactly like a single-reading message (`Message.readings()`).
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqttspool.batch import BatchError, decode

if TYPE_CHECKING:
    from .broker import MosquittoBroker

__all__ = ["DEFAULT_TOPIC", "Message", "Recorder", "RecorderFactory"]

DEFAULT_TOPIC = "mqttspool/#"
_SESSION_EXPIRY = 300


@dataclass(frozen=True)
class Message:
    """One received PUBLISH. `arrived` is `time.monotonic()` at receipt.

    `parsed` is the reading dict, filled by the recorder on arrival (None for
    status/spool messages); use `data()`, which also works without it.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    arrived: float

    parsed: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    # The per-reading documents of a decoded batch (None: not a valid batch).
    batch: tuple[dict[str, Any], ...] | None = field(default=None, compare=False, repr=False)
    content_type: str | None = field(default=None, compare=False)
    user_properties: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def data(self) -> dict[str, Any] | None:
        """The payload as a reading dict if it is one (has str `id`, int `seq`), else None."""
        return self.parsed if self.parsed is not None else _parse_reading(self.payload)

    def readings(self) -> list[dict[str, Any]]:
        """Every reading this message carries: a batch's, or the single one (or none)."""
        if self.batch is not None:
            return list(self.batch)
        doc = self.data()
        return [] if doc is None else [doc]


def _parse_batch(topic: str, payload: bytes) -> tuple[dict[str, Any], ...] | None:
    if not topic.endswith("/batch"):
        return None
    try:
        return tuple(r.payload_doc() for r in decode(payload))
    except BatchError:
        return None


def _parse_reading(payload: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict) and isinstance(doc.get("id"), str) and isinstance(doc.get("seq"), int):
        return doc
    return None


class RecorderFactory(Protocol):
    """Signature of the `recorder_factory` fixture: returns a started (subscribed) recorder."""

    def __call__(
        self,
        broker: MosquittoBroker,
        *,
        port: int | None = None,
        topic: str = DEFAULT_TOPIC,
        username: str | None = None,
    ) -> Recorder:
        """See `Recorder.for_broker`; the recorder is stopped when the test ends."""
        ...


class Recorder:
    """Records every message on `topic` (default `mqttspool/#`) at QoS 1.

    Thread-safe: paho's network thread appends, test code reads snapshots.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        topic: str = DEFAULT_TOPIC,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        client_id: str | None = None,
        keepalive: int = 10,
    ) -> None:
        self.host = host
        self.port = port
        self.topic = topic
        self.client_id = client_id or f"recorder-{uuid.uuid4().hex[:12]}"
        self._keepalive = keepalive
        self._cond = threading.Condition()
        self._messages: list[Message] = []
        self._connected = False
        self._connects = 0
        # `_subscribed`: this connection's SUBACK has arrived.
        self._subscribed = False
        self._last_error = "no connection attempt yet"
        self._client = self._make_client(username, password, ca_file, cert_file, key_file)

    @classmethod
    def for_broker(
        cls,
        broker: MosquittoBroker,
        *,
        port: int | None = None,
        topic: str = DEFAULT_TOPIC,
        username: str | None = None,
        client_id: str | None = None,
    ) -> Self:
        """A recorder with the broker's credentials and TLS settings.

        `port` overrides the broker's (e.g. a `TcpProxy` port in front of
        it). On the auth broker it logs in as `username` (default
        `dashboard`); on the TLS broker it trusts the test CA and presents
        the client certificate when the broker requires one.
        """
        user: str | None = None
        password: str | None = None
        if broker.users:
            user = username or "dashboard"
            password = broker.users[user]
        certs = broker.certs if broker.kind == "tls" else None
        with_cert = certs is not None and broker.require_certificate
        return cls(
            broker.host,
            broker.port if port is None else port,
            topic=topic,
            username=user,
            password=password,
            ca_file=str(certs.ca_cert) if certs is not None else None,
            cert_file=str(certs.client_cert) if with_cert and certs is not None else None,
            key_file=str(certs.client_key) if with_cert and certs is not None else None,
            client_id=client_id,
        )

    # ------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 10.0) -> None:
        """Connect (retrying in the background) and return once the SUBACK arrived."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = _SESSION_EXPIRY
        self._client.connect_async(
            self.host,
            self.port,
            keepalive=self._keepalive,
            clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client.loop_start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._subscribed, timeout):
                error = self._last_error
                self._client.loop_stop()
                raise TimeoutError(
                    f"recorder not subscribed to {self.topic!r} on {self.host}:{self.port} "
                    f"within {timeout} s: {error}"
                )

    def stop(self) -> None:
        """Disconnect (ending the session on the broker) and stop paho's thread."""
        properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 0
        self._client.disconnect(properties=properties)
        self._client.loop_stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- state

    @property
    def connected(self) -> bool:
        """True while connected with the subscription in place."""
        with self._cond:
            return self._connected and self._subscribed

    @property
    def connects(self) -> int:
        """Number of successful connects so far (1 after start, +1 per reconnect)."""
        with self._cond:
            return self._connects

    def wait_connected(self, timeout: float, *, connects: int = 1) -> None:
        """Block until connected and subscribed, after at least `connects` connects.

        After a fault, `wait_connected(t, connects=recorder.connects + 1)` taken
        before the fault waits for the reconnect.
        """
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._connected and self._subscribed and self._connects >= connects,
                timeout,
            )
            if not ok:
                raise TimeoutError(
                    f"recorder not connected (connects={self._connects}, wanted {connects}) "
                    f"within {timeout} s: {self._last_error}"
                )

    # -------------------------------------------------------------- contents

    def messages(self) -> list[Message]:
        """Snapshot of everything received, in arrival order."""
        with self._cond:
            return list(self._messages)

    def data(self) -> list[dict[str, Any]]:
        """Parsed reading payloads (single or in batches), in arrival order."""
        return [doc for m in self.messages() for doc in m.readings()]

    def data_ids(self) -> list[str]:
        """Reading ids in arrival order (duplicates included)."""
        return [str(doc["id"]) for doc in self.data()]

    def seqs(self, device: str | None = None) -> list[int]:
        """Reading seqs in arrival order, optionally only for one device."""
        return [
            int(doc["seq"]) for doc in self.data() if device is None or doc.get("device") == device
        ]

    def duplicates(self) -> dict[str, int]:
        """Reading ids received more than once, with how often they arrived."""
        counts = collections.Counter(self.data_ids())
        return {reading_id: n for reading_id, n in counts.items() if n > 1}

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._cond:
            self._messages.clear()

    # ----------------------------------------------------------------- waits

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout: float) -> list[Message]:
        """Wait until `predicate(messages)` is true; return that snapshot.

        Polled every 50 ms with a snapshot, outside the recorder's lock (so
        a predicate may also look at state outside the recorder, and a slow
        predicate never stalls paho's thread — which would make the broker
        queue, and eventually drop, messages for this subscriber). Raises
        `TimeoutError` describing what did arrive.
        """
        deadline = time.monotonic() + timeout
        while True:
            # The predicate runs outside the lock, and arrivals do not wake this loop
            # (it polls every 50 ms): a wait must never slow down the paho thread.
            with self._cond:
                snapshot = list(self._messages)
            if predicate(snapshot):
                return snapshot
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(self._describe_timeout(timeout, snapshot))
            with self._cond:
                self._cond.wait(min(remaining, 0.05))

    def wait_count(self, count: int, timeout: float) -> list[Message]:
        """Wait until at least `count` messages (of any kind) have arrived."""
        return self.wait_for(lambda messages: len(messages) >= count, timeout)

    def wait_data_ids(self, count: int, timeout: float) -> set[str]:
        """Wait until at least `count` distinct reading ids have arrived; return them."""

        def distinct(messages: list[Message]) -> set[str]:
            return {str(doc["id"]) for m in messages for doc in m.readings()}

        return distinct(self.wait_for(lambda messages: len(distinct(messages)) >= count, timeout))

    # ------------------------------------------------------- paho callbacks

    def _make_client(
        self,
        username: str | None,
        password: str | None,
        ca_file: str | None,
        cert_file: str | None,
        key_file: str | None,
    ) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            client.username_pw_set(username, password)
        if ca_file is not None:
            client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file)
        client.reconnect_delay_set(min_delay=1, max_delay=1)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            with self._cond:
                self._last_error = f"CONNACK {reason_code} ({reason_code.value:#04x})"
            return
        with self._cond:
            self._connected = True
            self._connects += 1
            # Always subscribe again: mosquitto 2.0.11 can report a resumed session
            # after a restart whose subscription no longer matches (measured).
            # Retain handling 1 resends retained messages only for a new subscription.
            self._subscribed = False
            self._cond.notify_all()
        client.subscribe(self.topic, options=SubscribeOptions(qos=1, retainHandling=1))

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        with self._cond:
            self._last_error = "TCP/TLS connect failed"

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._connected = False
            self._subscribed = False
            self._last_error = f"disconnected: {reason_code}"
            self._cond.notify_all()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._cond:
            if all(not code.is_failure for code in reason_codes):
                self._subscribed = True
            else:
                self._last_error = f"SUBACK refused: {[str(code) for code in reason_codes]}"
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        props = msg.properties
        message = Message(
            topic=msg.topic,
            payload=payload,
            qos=msg.qos,
            retain=bool(msg.retain),
            arrived=time.monotonic(),
            # Parsed once here so waits and queries over many messages stay cheap.
            parsed=_parse_reading(payload),
            batch=_parse_batch(msg.topic, payload),
            content_type=getattr(props, "ContentType", None),
            user_properties=tuple(getattr(props, "UserProperty", ())),
        )
        with self._cond:
            self._messages.append(message)

    def _describe_timeout(self, timeout: float, messages: list[Message]) -> str:
        tail = ", ".join(f"{m.topic}={m.payload[:60]!r}" for m in messages[-5:])
        return (
            f"condition not met within {timeout} s; {len(messages)} messages recorded "
            f"(connected={self._connected}, connects={self._connects}); last: [{tail}]"
        )
