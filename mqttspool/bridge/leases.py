"""Which rows to send next: the lease cursor, the spool watch and the consumer gate.

Leases live in memory only: after a (re)connect, or when the spool looks
drained, every row still in the spool is leasable again, so the spool, not
paho, owns redelivery. :class:`SpoolWatch` keeps an idle bridge from querying
the spool; :class:`RowSource` puts both behind the consumer gate
(:mod:`mqttspool.gate`).
"""

from __future__ import annotations

from collections.abc import Callable

from mqttspool.gate import ConsumerGate
from mqttspool.reading import StoredReading
from mqttspool.spool import Spool

VERSION_CHECK_S = 1.0  # the first look for other processes' rows after a lease or a find
VERSION_CHECK_MAX_S = 4.0  # found nothing: each look waits twice as long, up to this


class LeaseCursor:
    """What the bridge has taken from the spool since the last (re)connect.

    Leases live in memory only: :meth:`release` (after a disconnect, or when
    the spool looks drained so requeued rows behind the cursor are found)
    makes every row still in the spool leasable again. With ``live_first``
    the rows that arrive after the first lease go out before the backlog that
    was already there, and both are read oldest first.
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.release()

    def release(self) -> None:
        """Forget every lease: the next :meth:`take` starts again at the oldest row."""
        self._cursor = 0
        self._live_cursor = 0
        self._backlog_end: int | None = None
        self._live_done = False

    def take(self, n: int, live_first: bool = False) -> list[StoredReading]:
        """Up to ``n`` rows not yet leased, oldest first (or newly arrived first)."""
        if n <= 0:
            return []
        if live_first and not self._live_done:
            return self._take_live_first(n)
        rows = self.spool.rows_after(self._cursor, n)
        if rows:
            self._cursor = rows[-1].seq
        return rows

    def _take_live_first(self, n: int) -> list[StoredReading]:
        if self._backlog_end is None:
            self._backlog_end = self.spool.newest_seq()
            self._live_cursor = self._backlog_end
        live = self.spool.rows_after(self._live_cursor, n)
        if live:
            self._live_cursor = live[-1].seq
        backlog = self.spool.rows_after(self._cursor, n - len(live), through=self._backlog_end)
        if backlog:
            self._cursor = backlog[-1].seq
        elif len(live) < n:
            # Backlog exhausted: from now on one cursor, in seq order.
            self._cursor, self._live_done = self._live_cursor, True
        return live + backlog


class SpoolWatch:
    """Whether the spool may hold rows the bridge has not leased, mostly without a query.

    After a lease that found fewer rows than asked, the spool is *exhausted*:
    the bridge leases again only when this process committed rows
    (``Spool.appended.count`` moved, no query) or ``PRAGMA data_version`` says
    another connection committed (``mqttspool enqueue``, ``dead-letters
    requeue``), which is checked ``VERSION_CHECK_S`` after the lease, then, while
    nothing changes, twice as long each time up to ``VERSION_CHECK_MAX_S`` (an idle
    daemon looks 15 times a minute, not 60; rows another process commits to an idle
    spool go out within 4 s).
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.exhausted = False
        self.next_check = 0.0
        self._appends = spool.appended.count
        self._version: int | None = None
        self._check_every = VERSION_CHECK_S

    def reset(self) -> None:
        """The leases were released: the next lease must look at the spool."""
        self.exhausted = False

    def may_have_rows(self, now: float) -> bool:
        """True when a lease may find something (the caller then leases through
        :meth:`lease`); False costs no query unless the version check is due."""
        appends = self.spool.appended.count
        if not self.exhausted or appends != self._appends:
            self._appends = appends  # taken before the lease: a later commit moves it again
            return True
        if now < self.next_check:
            return False
        version, self._version = self._version, self.spool.data_version()
        changed = version != self._version
        if changed:
            self._check_every = VERSION_CHECK_S
        else:
            self._check_every = min(2 * self._check_every, VERSION_CHECK_MAX_S)
        self.next_check = now + self._check_every
        return changed

    def known_empty(self) -> bool:
        """True when the last lease found everything and this process committed nothing
        since (no query; rows of other processes are found by :meth:`may_have_rows`)."""
        return self.exhausted and self.spool.appended.count == self._appends

    def lease(
        self, take: Callable[[int], list[StoredReading]], asked: int, now: float
    ) -> list[StoredReading]:
        """``take(asked)``, recorded: fewer rows than asked means nothing more is there now.

        ``PRAGMA data_version`` is read just BEFORE the query. A lease that found
        everything read every row committed before that version, other processes'
        included: the version check compares with it and is due ``VERSION_CHECK_S``
        after the lease, so a daemon whose sampler commits every second leases on those
        commits and never wakes for the check. (Read after the query, a commit in
        between would be taken as seen and wait for the next one.)
        """
        version = self.spool.data_version()
        rows = take(asked)
        self.exhausted = len(rows) < asked
        if self.exhausted:
            self._version = version
            if rows:  # activity: look again soon
                self._check_every = VERSION_CHECK_S
            self.next_check = max(self.next_check, now + self._check_every)
        return rows


class RowSource:
    """Leases rows for the senders, as far as the consumer gate allows.

    ``on_gate_change(now)`` is called when what the retained snapshot shows
    about the gate changed (paused or not).
    """

    def __init__(
        self,
        spool: Spool,
        gate: ConsumerGate,
        on_gate_change: Callable[[float], None],
        *,
        live_first: bool = False,
    ) -> None:
        self.leases = LeaseCursor(spool)
        self.watch = SpoolWatch(spool)
        self.gate = gate
        self.live_first = live_first
        self._on_gate_change = on_gate_change
        self.found: bool | None = None  # the last lease found rows; None: no lease since reset

    def gated(self, room: int, readings_in_flight: int, now: float) -> int:
        """``room`` as far as the consumer gate allows."""
        allowance = self.gate.allowance(now, readings_in_flight)
        if allowance.release_leases:
            self.restart()  # rows kept on PUBACK 0x10 lie behind the cursor
        if self.gate.take_change():
            self._on_gate_change(now)
        return room if allowance.readings is None else min(room, allowance.readings)

    def lease(self, n: int, now: float) -> list[StoredReading]:
        """Up to ``n`` rows to send; no query while the spool is known to hold none."""
        rows: list[StoredReading] = []
        if self.watch.may_have_rows(now):
            rows = self.watch.lease(self._take, n, now)
        self.gate.on_leased(len(rows))
        self.found = bool(rows)
        return rows

    def _take(self, n: int) -> list[StoredReading]:
        return self.leases.take(n, live_first=self.live_first)

    def forget_leases(self) -> None:
        """Lease from the oldest row again (the watch keeps its state: no extra query)."""
        self.leases.release()

    def restart(self) -> None:
        """Lease from the oldest row again and look at the spool at the next lease."""
        self.leases.release()
        self.watch.reset()
