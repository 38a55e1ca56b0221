"""The consumer gate: whether the bridge may publish readings right now.

Two optional rules (DESIGN.md, Bridge: "Delivery to a consumer"):

* ``bridge.require_subscribers``: an MQTT v5 PUBACK 0x10 ("no matching
  subscribers") means nobody received the reading. The row stays spooled,
  readings pause (status and spool snapshot still go out), and after
  ``bridge.reconnect_max`` seconds ONE reading -- the oldest -- goes out as a
  probe. A probe answered 0x10 stays spooled as well and the pause starts
  over; any reading answered with success resumes publishing.
* ``bridge.consumer_topic``: readings go out only while the retained
  consumer-state message says ``online`` (:func:`consumer_online`). Offline,
  unparsable or not (yet) received: readings wait in the spool. A flip to
  offline stops new readings; those in flight settle normally.

Pure logic, no I/O but log lines: the bridge calls :meth:`ConsumerGate.allowance`
before leasing rows and reports PUBACKs and state changes to it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mqttspool.config import BridgeConfig

logger = logging.getLogger(__name__)

NO_MATCHING_SUBSCRIBERS = 0x10
PUBACK_FAILURE = 0x80


def consumer_online(payload: bytes) -> bool:
    """True for ``online`` or a JSON object with ``"online": true`` (Sparkplug 3.0 STATE)."""
    text = payload.decode("utf-8", errors="replace").strip()
    if text.lower() == "online":
        return True
    if text.count("{") + text.count("[") > 8:
        return False  # a STATE is a flat object; deep nesting would recurse in the parser
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("online") is True


@dataclass(frozen=True)
class Allowance:
    """How many readings may be leased now (None: no limit) and whether to re-read the spool."""

    readings: int | None
    release_leases: bool = False


class ConsumerGate:
    """Holds readings back while no consumer is known to receive them."""

    def __init__(self, require_subscribers: bool, consumer_topic: str, probe_after: float) -> None:
        self.require_subscribers = require_subscribers
        self.consumer_topic = consumer_topic
        self.probe_after = probe_after
        self.online: bool | None = None  # the consumer topic's last word; None: none yet
        self.paused_until: float | None = None  # set by a 0x10; None: not paused
        self.kept = 0  # readings answered 0x10 and kept spooled, since start
        self._probe_out = False
        self._kept_behind_cursor = False  # kept rows the lease cursor has already passed
        self.changed = False  # the state the snapshot shows changed (see take_change)

    @classmethod
    def for_bridge(cls, cfg: BridgeConfig) -> ConsumerGate:
        """The gate ``[bridge]`` asks for (probing every ``reconnect_max`` seconds)."""
        return cls(cfg.require_subscribers, cfg.consumer_topic, cfg.reconnect_max)

    @property
    def paused(self) -> str | None:
        """Why readings are held back (``no_subscribers``, ``consumer_offline``), or None."""
        if self.consumer_topic and not self.online:
            return "consumer_offline"
        if self.paused_until is not None:
            return "no_subscribers"
        return None

    def on_connect(self) -> None:
        """A new connection: its consumer-state subscription delivers the state afresh."""
        self._probe_out = False
        if self.consumer_topic and self.online is not None:
            self.online = None
            self.changed = True

    def on_consumer_state(self, online: bool) -> None:
        """The retained consumer-state message arrived (or changed)."""
        if online == self.online:
            return
        self.online, self.changed = online, True
        logger.info(
            "consumer %s on %s: %s",
            "online" if online else "offline",
            self.consumer_topic,
            "publishing readings" if online else "readings stay spooled until it is online",
        )

    def keeps(self, reason_code: int, now: float) -> bool:
        """A reading's PUBACK: True when the row must stay spooled (0x10 with the rule on)."""
        if self.require_subscribers and reason_code == NO_MATCHING_SUBSCRIBERS:
            self._on_no_subscribers(now)
            return True
        if reason_code < PUBACK_FAILURE and self.paused_until is not None:
            self.paused_until, self._probe_out, self.changed = None, False, True
            logger.info("a subscriber received a reading: publishing readings again")
        return False

    def _on_no_subscribers(self, now: float) -> None:
        self.kept += 1
        self._kept_behind_cursor = True
        self._probe_out = False
        if self.paused_until is None:
            self.changed = True
            logger.warning(
                "broker reports no matching subscribers (PUBACK 0x10) and"
                " bridge.require_subscribers is on: readings pause and stay spooled;"
                " probing with one reading every %g s",
                self.probe_after,
            )
        self.paused_until = now + self.probe_after

    def allowance(self, now: float, readings_in_flight: int) -> Allowance:
        """How many readings the bridge may lease now."""
        if self.consumer_topic and not self.online:
            return Allowance(0)
        limit: int | None = None
        if self.paused_until is not None:
            if now < self.paused_until or self._probe_out:
                return Allowance(0)
            limit = 1
        if not self._kept_behind_cursor:
            return Allowance(limit)
        if readings_in_flight:
            return Allowance(0)  # re-reading now would lease rows still in flight twice
        self._kept_behind_cursor = False
        return Allowance(limit, release_leases=True)

    def on_leased(self, readings: int) -> None:
        """The bridge published ``readings`` under the last allowance (a probe while paused)."""
        if readings and self.paused_until is not None:
            self._probe_out = True

    def take_change(self) -> bool:
        """True once after the state the snapshot shows changed (the caller republishes it)."""
        changed, self.changed = self.changed, False
        return changed

    def snapshot_fields(self) -> dict[str, object]:
        """Fields added to the retained spool snapshot."""
        return {"readings_paused": self.paused}
