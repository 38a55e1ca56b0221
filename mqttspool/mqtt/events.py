"""What a broker connection reports, in plain types: events, failure kinds, the Publisher.

Nothing here imports paho: the bridge, its fakes and the tests work with these
types only; :mod:`mqttspool.mqtt.publisher` turns paho's callbacks into them.
"""

from __future__ import annotations

import enum
import ssl
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol


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


PUBACK_FAILURE = 0x80  # PUBACK reason codes from here on refuse the message


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
    """PUBACK for ``mid`` with its reason code (0 for MQTT 3.1.1) and, for a refusal
    (code >= 0x80), the code's name ("" for success codes). ``at``: ``time.monotonic()``
    when it arrived (0: unknown, taken as when it is handled); with lazy acks the
    bridge may handle it seconds later, and the settle delay counts from here."""

    generation: int
    mid: int
    reason_code: int
    reason: str
    at: float = 0.0


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
    """What the bridge needs from a broker connection (a fake implements it in tests).

    ``acks_wake``: whether a PUBACK ends a :meth:`wait` (other events always do).
    The bridge clears it while nothing waits on acknowledgements, so a daemon
    sending a few readings a second is not woken once per PUBACK.
    """

    acks_wake: bool

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

    def corked(self) -> AbstractContextManager[None]:
        """A block of publishes sent together: the network side is woken once, at its
        end, not per message (see :mod:`mqttspool.mqtt.cork`)."""
        ...

    def wait(self, timeout: float) -> None:
        """Block until an event arrives or ``timeout`` seconds pass."""
        ...

    def close(self) -> None:
        """Disconnect (if connected) and drop the client."""
        ...
