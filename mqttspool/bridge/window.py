"""The window: MQTT messages in flight on one connection (flow control).

Every unacknowledged QoS 1 message counts as ONE against the window -- a
reading, a batch of a thousand readings, a status or snapshot message alike --
because that is what the broker's Receive Maximum counts. How many *readings*
those messages carry is bounded elsewhere (``bridge.max_resend``, see
:mod:`mqttspool.bridge.settler`).
"""

from __future__ import annotations


class Window:
    """Messages published on one connection and not yet acknowledged.

    ``size`` is ``min(bridge.max_inflight, broker Receive Maximum)``. Insertion
    order is publish order, so the first entry is the oldest unacknowledged
    message (what ``bridge.ack_timeout`` watches).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._sent_at: dict[int, float] = {}  # mid -> when published, every QoS 1 message
        self._seqs: dict[int, tuple[int, ...]] = {}  # mid -> the readings it carries
        self.readings = 0  # readings carried by the messages in flight

    def load(self) -> int:
        """Messages in flight: what counts against :attr:`size`."""
        return len(self._sent_at)

    def room(self) -> int:
        """Messages that may be published now (never negative)."""
        return max(0, self.size - len(self._sent_at))

    def add(self, mid: int, now: float, seqs: tuple[int, ...] = ()) -> None:
        """A QoS 1 message went out; ``seqs`` are the readings it carries (none: control)."""
        self._sent_at[mid] = now
        if seqs:
            self._seqs[mid] = seqs
            self.readings += len(seqs)

    def ack(self, mid: int) -> tuple[int, ...]:
        """The PUBACK of ``mid``: frees its slot; returns the readings it carried."""
        self._sent_at.pop(mid, None)
        seqs = self._seqs.pop(mid, ())
        self.readings -= len(seqs)
        return seqs

    def holds(self, mid: int) -> bool:
        """True while ``mid`` waits for its PUBACK."""
        return mid in self._sent_at

    def oldest(self) -> float | None:
        """When the oldest unacknowledged message was published (None: nothing in flight)."""
        return next(iter(self._sent_at.values()), None)

    def reading_mids(self) -> list[int]:
        """The mids of the messages carrying readings, oldest first."""
        return list(self._seqs)
