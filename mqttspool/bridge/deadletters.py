"""The dead-letter log: readings the broker rejected, as few log lines as possible.

An ACL can reject thousands of readings a minute; the rows go to the spool's
dead-letter table (:meth:`~mqttspool.spool.Spool.settle`) and this log says so
once per reason code per interval, with counts and the seq range, plus a
summary per reason at the end of a run.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from mqttspool.logthrottle import LogThrottle
from mqttspool.spool import Rejection

# Every part of the bridge logs as "mqttspool.bridge": one name to grep and to configure.
logger = logging.getLogger("mqttspool.bridge")


@dataclass
class _Tally:
    """Readings the broker rejected with one reason code: how many, first and last seq."""

    reason: str
    count: int = 0
    first_seq: int = 0
    last_seq: int = 0

    def add(self, rejection: Rejection) -> None:
        """Count one more rejection."""
        if not self.count:
            self.first_seq = rejection.seq
        self.count += 1
        self.last_seq = rejection.seq

    def describe(self, code: int) -> str:
        """``N reading(s) with reason 0xNN text (seq a..b)``."""
        seqs = (
            f"seq {self.first_seq}"
            if self.count == 1
            else f"seqs {self.first_seq}..{self.last_seq}"
        )
        return f"{self.count} reading(s) with reason 0x{code:02X} {self.reason} ({seqs})"


@dataclass
class DeadLetterLog:
    """Dead letters by reason code: since the last log line, and since start."""

    broker: str
    throttle: LogThrottle
    unlogged: dict[int, _Tally] = field(default_factory=dict)
    total: dict[int, _Tally] = field(default_factory=dict)

    def record(self, rejected: list[Rejection]) -> None:
        """Rejections just moved to the dead-letter table: one line per reason per interval."""
        for rej in rejected:
            for tallies in (self.unlogged, self.total):
                tallies.setdefault(rej.code, _Tally(rej.reason)).add(rej)
        for code, n in Counter(rej.code for rej in rejected).items():
            if self.throttle.note(("dead_letter", code), n):
                self._log(code, self.unlogged.pop(code), "")

    def summary(self) -> None:
        """At the end of a run: the total per reason code, if the broker rejected anything."""
        for code, tally in sorted(self.total.items()):
            self.throttle.flush(("dead_letter", code))
            self._log(code, tally, " in total since start")
        self.unlogged.clear()

    def _log(self, code: int, tally: _Tally, scope: str) -> None:
        logger.warning(
            "broker %s rejected %s%s: moved to the dead-letter table (`mqttspool dead-letters"
            " list` shows them, `requeue` sends them again once the broker allows it)",
            self.broker,
            tally.describe(code),
            scope,
        )
