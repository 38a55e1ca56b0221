"""The settler: PUBACKs -> deletes -> fsync policy, and the ``bridge.max_resend`` bound.

What one crash or power cut may make the bridge resend: readings in flight +
acknowledged but not yet deleted + deleted in a commit not yet fsync'd. The
settler keeps that sum at most ``bridge.max_resend``:

* acknowledged rows are deleted in batches (``ack_batch`` of them, or once the
  oldest has waited ``settle_delay``), in commits WITHOUT an fsync: cheap on an
  SD card, and losing one to a power cut only resends those rows;
* they are fsync'd (one small FULL commit) only when the next readings would
  pass ``max_resend`` (:meth:`Settler.room`): a backlog drain fsyncs about
  once per ``max_resend``/2 readings, never per window;
* and at least every ``bridge.settle_interval`` while any are unsynced
  (:meth:`Settler.sync_if_due`), so a trickle of live readings is durable
  within seconds. A sampling round at ``synchronous = "full"`` covers them too.
"""

from __future__ import annotations

import logging

from mqttspool.config import BridgeConfig
from mqttspool.counters import MESSAGES_PUBLISHED, Counters
from mqttspool.errors import SpoolCorruptError, SpoolError, SpoolGoneError
from mqttspool.logthrottle import LogThrottle
from mqttspool.mqtt.events import PUBACK_FAILURE
from mqttspool.spool import Rejection, Spool

from .deadletters import DeadLetterLog

logger = logging.getLogger("mqttspool.bridge")

RETRY_S = 0.05  # a settle or fsync that failed (disk full) is retried at this pace


class Settler:
    """Acknowledged rows waiting to be deleted, and the fsync policy of the deletes."""

    def __init__(
        self,
        spool: Spool,
        *,
        max_resend: int,
        settle_interval: float,
        settle_delay: float,
        counters: Counters,
        dead_letters: DeadLetterLog,
        throttle: LogThrottle,
        wake_slack: float = 0.0,
    ) -> None:
        self.spool = spool
        self.max_resend = max_resend
        self.settle_interval = settle_interval
        self.settle_delay = settle_delay  # how long acknowledged rows wait for more
        # The settle timer wakes the loop this much after the delay is up; any step after
        # the delay settles. The daemon sets it (lazy acks): a round of new readings
        # every second or so then settles on its own wake-up, not on one of its own.
        self.wake_slack = wake_slack
        # Deletes in transactions of up to a quarter of max_resend: few WAL frames per row.
        self.ack_batch = max(32, min(1000, max_resend // 4))
        self.counters = counters
        self.dead_letters = dead_letters
        self._throttle = throttle
        self.acked: list[int] = []
        self.rejected: list[Rejection] = []
        self.first_pending_at: float | None = None  # the oldest ack not yet deleted
        self.unsynced_since: float | None = None  # the oldest delete not yet fsync'd
        self.published_total = self.rejected_total = 0

    @classmethod
    def for_bridge(
        cls,
        spool: Spool,
        cfg: BridgeConfig,
        settle_delay: float,
        counters: Counters,
        dead_letters: DeadLetterLog,
        throttle: LogThrottle,
        wake_slack: float = 0.0,
    ) -> Settler:
        """The settler ``[bridge]`` asks for (``max_resend``, ``settle_interval``)."""
        return cls(
            spool,
            max_resend=cfg.max_resend,
            settle_interval=cfg.settle_interval,
            settle_delay=settle_delay,
            counters=counters,
            dead_letters=dead_letters,
            throttle=throttle,
            wake_slack=wake_slack,
        )

    # ------------------------------------------------------------ the bound

    @property
    def pending(self) -> int:
        """Readings acknowledged (or rejected) and not yet deleted."""
        return len(self.acked) + len(self.rejected)

    def load(self, in_flight: int) -> int:
        """Readings a crash or power cut now could resend, with ``in_flight`` readings out."""
        return in_flight + self.pending + self.spool.unsynced_deletes

    def fits(self, in_flight: int) -> int:
        """Readings that may go out without passing ``max_resend`` (no fsync to free room)."""
        return max(0, self.max_resend - self.load(in_flight))

    def room(self, in_flight: int, wanted: int, now: float) -> int:
        """Readings that may go out now; deletes and fsyncs first when fewer than
        ``wanted`` (at most ``max_resend``/2) fit and deletes could free room."""
        wanted = min(wanted, max(1, self.max_resend // 2))
        room = self.fits(in_flight)
        if room >= wanted or not (self.pending or self.spool.unsynced_deletes):
            return room
        if self.pending:
            self.settle(now, durable=True)  # its fsync covers every earlier delete
        else:
            self.sync()
        return self.fits(in_flight)

    # ------------------------------------------------------------ PUBACKs

    def on_ack(self, seqs: tuple[int, ...], code: int, reason: str, now: float) -> None:
        """A PUBACK settles every reading its message carried the same way; ``now``: when
        it arrived (the settle delay counts from the oldest waiting ack)."""
        if self.first_pending_at is None:
            self.first_pending_at = now
        if code < PUBACK_FAILURE:
            self.acked.extend(seqs)
        else:
            self.rejected.extend(Rejection(s, code, reason) for s in seqs)

    def step(self, now: float) -> None:
        """Delete what is due (a full batch, or the settle delay is up); fsync what is due."""
        due = self.first_pending_at is not None and now - self.first_pending_at >= self.settle_delay
        if self.pending >= self.ack_batch or (self.pending and due):
            self.settle(now)
        self.sync_if_due(now)

    def next_due(self, now: float) -> float | None:
        """When :meth:`step` has work next (None: nothing waits)."""
        timers = []
        if self.first_pending_at is not None:
            settle_at = self.first_pending_at + self.settle_delay + self.wake_slack
            timers.append(max(settle_at, now + RETRY_S))
        if self.unsynced_since is not None:
            timers.append(max(self.unsynced_since + self.settle_interval, now + RETRY_S))
        return min(timers, default=None)

    # ------------------------------------------------------------ writes

    def settle(self, now: float, durable: bool = False) -> None:
        """Delete acknowledged rows, dead-letter rejected ones (one transaction)."""
        if not self.pending:
            return
        acked, rejected = self.acked, self.rejected
        try:
            self.spool.settle(acked, rejected, durable=durable)
        except (SpoolCorruptError, SpoolGoneError):
            raise  # not retried here: the service salvages a corrupt spool, stops on a gone one
        except SpoolError as exc:
            # e.g. disk full: keep the acks and retry; max_resend stays used meanwhile.
            self._log_failure("settle", exc)
            return
        self.acked, self.rejected, self.first_pending_at = [], [], None
        if not durable and self.unsynced_since is None and self.spool.unsynced_deletes:
            self.unsynced_since = now
        self.published_total += len(acked)
        self.rejected_total += len(rejected)
        self.counters.inc(MESSAGES_PUBLISHED, n=len(acked))
        if rejected:
            self.dead_letters.record(rejected)

    def sync_if_due(self, now: float) -> None:
        """Unsynced deletes are fsync'd at least every ``settle_interval``."""
        if not self.spool.unsynced_deletes:
            self.unsynced_since = None  # covered by an fsync'd commit (a round at FULL)
        elif self.unsynced_since is None:
            self.unsynced_since = now
        elif now - self.unsynced_since >= self.settle_interval:
            self.sync()

    def sync(self) -> None:
        """Fsync every delete so far."""
        try:
            self.spool.sync_deletes()
        except (SpoolCorruptError, SpoolGoneError):
            raise
        except SpoolError as exc:
            self._log_failure("sync", exc)
            return
        self.unsynced_since = None

    def _log_failure(self, what: str, exc: SpoolError) -> None:
        count = self._throttle.note(what)
        if not count:
            return
        attempts = f" ({count} attempts)" if count > 1 else ""
        if what == "sync":
            logger.error("cannot fsync deleted readings: %s%s; publishing pauses", exc, attempts)
        else:
            logger.error(
                "cannot delete %d acknowledged reading(s): %s%s; publishing pauses until it works",
                self.pending,
                exc,
                attempts,
            )
