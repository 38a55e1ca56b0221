"""The drain loop: spool -> broker, QoS 1, delete only on PUBACK.

:class:`Bridge` is a plain state machine driven by :meth:`Bridge.step` with
the current monotonic time, so tests use a fake clock and a fake publisher;
:func:`build_bridge` wires it from the settings and :class:`BridgeThread` is
the thin thread around it. The parts, one module each:

* ``connection`` -- :class:`Link` (attempts, backoff, connect timeout, log
  lines) and a :class:`Session` per connection;
* ``window`` -- :class:`Window`: MQTT messages in flight (flow control; a
  batch is one message);
* ``settler`` -- :class:`Settler`: PUBACKs -> deletes -> fsync policy, and
  the ``bridge.max_resend`` bound (readings a crash or power cut may resend);
* ``outbox`` -- :class:`Outbox`: status, spool snapshot, Home Assistant;
* ``senders`` -- :class:`ReadingSender`, :class:`BatchSender`;
* ``leases`` -- :class:`LeaseCursor`, :class:`SpoolWatch`, :class:`RowSource`
  (leases behind the consumer gate);
* ``deadletters`` -- :class:`DeadLetterLog`.

States: disconnected (waiting out the backoff), connecting, connected
(publishing). On every connection the bridge forgets its leases and resends
from the oldest unacknowledged row; rows leave the spool only through
:meth:`Spool.settle` (PUBACK < 0x80: delete, >= 0x80: dead letter).

Idle costs nothing: :meth:`Bridge.step` returns the time until its next timer
is due and queries the spool only when rows may be there; the thread sleeps in
the publisher's ``wait`` until then, or until a paho event or a commit of this
process wakes it.
"""

from __future__ import annotations

from .connection import Backoff, Link, Session, TopicAliases
from .core import ACK_FLUSH_S, MAX_WAIT_S, SETTLE_DELAY_S, Bridge, Parts, build_bridge
from .deadletters import DeadLetterLog
from .leases import VERSION_CHECK_MAX_S, VERSION_CHECK_S, LeaseCursor, RowSource, SpoolWatch
from .outbox import (
    SNAPSHOT_INTERVAL_S,
    Companion,
    Outbox,
    OutMessage,
    will_for,
)
from .senders import BatchSender, ReadingSender, Sender, TokenBucket
from .settler import Settler
from .thread import BridgeThread
from .window import Window

__all__ = [
    "ACK_FLUSH_S",
    "MAX_WAIT_S",
    "SETTLE_DELAY_S",
    "SNAPSHOT_INTERVAL_S",
    "VERSION_CHECK_MAX_S",
    "VERSION_CHECK_S",
    "Backoff",
    "BatchSender",
    "Bridge",
    "BridgeThread",
    "Companion",
    "DeadLetterLog",
    "LeaseCursor",
    "Link",
    "OutMessage",
    "Outbox",
    "Parts",
    "ReadingSender",
    "RowSource",
    "Sender",
    "Session",
    "Settler",
    "SpoolWatch",
    "TokenBucket",
    "TopicAliases",
    "Window",
    "build_bridge",
    "will_for",
]
