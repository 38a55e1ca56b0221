"""One loop for every long-running step function: the bridge, the sampler, drain, the relays.

A :class:`Runner` owns the ``while``: it calls ``step(now)``, which does one
round of work and returns how many seconds may pass before the next one (or
``None``: finished), then waits for that long on ONE wake-up that the step's
sources set -- a PUBACK or connection event (the publisher's own ``wait``), a
commit of new rows, a message or status line of a subscriber
(:class:`WakingQueue`), a stop request. Nothing polls: a loop with nothing due
sleeps until something happens.

Failures follow an explicit :class:`ErrorPolicy`: the exceptions it names as
fatal end the loop with the error recorded in :attr:`Runner.error` (a
supervisor reads it) or raised to the caller; every other exception is logged
(rate-limited by a :class:`LogThrottle`, counted in :attr:`Runner.failures`)
and the step retried after ``retry_s``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mqttspool.logthrottle import LogThrottle

logger = logging.getLogger(__name__)

T = TypeVar("T")
Step = Callable[[float], "float | None"]

MAX_WAIT_S = 3600.0  # one wait is capped (a timeout the OS accepts; never the only wake-up)


class Wakeup:
    """One wake-up for one loop: any source calls :meth:`wake`, the loop :meth:`wait` s.

    A wake that arrives while the loop is busy is not lost: the next
    :meth:`wait` returns at once (the flag is cleared after a wait, before
    the step that handles what woke it).
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def wake(self) -> None:
        """End the current (or next) wait."""
        self._event.set()

    def wait(self, timeout: float) -> None:
        """Block until woken or ``timeout`` seconds pass."""
        self._event.wait(timeout)
        self._event.clear()


class StopRequest:
    """A stop request that wakes the loops waiting for it (signal handlers set it).

    Unlike a bare :class:`threading.Event`, :meth:`set` also calls the wake-ups
    registered with :meth:`on_set`, so a loop asleep on its own wake-up ends
    its wait at once instead of noticing the request on its next poll.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._wakes: list[Callable[[], None]] = []

    def set(self) -> None:
        """Request the stop and wake every registered loop."""
        self._event.set()
        for wake in list(self._wakes):
            wake()

    def is_set(self) -> bool:
        """True once a stop was requested."""
        return self._event.is_set()

    def on_set(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` when the stop is requested (at once if it already was)."""
        self._wakes.append(wake)
        if self.is_set():
            wake()


class WakingQueue(queue.SimpleQueue[T]):
    """A :class:`queue.SimpleQueue` whose :meth:`put` also calls :attr:`on_put`.

    A subscriber's messages and status lines arrive on paho's thread; the loop
    that prints or logs them sets ``on_put`` to its :meth:`Wakeup.wake` and
    sleeps until one arrives instead of polling the queue.
    """

    def __init__(self) -> None:
        super().__init__()
        self.on_put: Callable[[], None] = _nothing

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Enqueue ``item``, then wake the consumer."""
        super().put(item, block, timeout)
        self.on_put()

    def put_nowait(self, item: T) -> None:
        """Enqueue ``item``, then wake the consumer (the C ``put_nowait`` skips :meth:`put`)."""
        self.put(item)


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class ErrorPolicy:
    """What an exception from the step means.

    ``fatal``: these end the loop (``BaseException`` s that are not
    ``Exception`` s, such as ``KeyboardInterrupt``, always do). Any other
    exception is retried after ``retry_s`` seconds; ``retry_s=None`` makes
    every exception fatal. ``expected``: fatal errors logged by their message
    alone (they say what to do); others are logged with their traceback.
    ``propagate``: a fatal error is raised from :meth:`Runner.run` (a loop in the
    caller's own thread) instead of being recorded and logged.
    """

    fatal: tuple[type[BaseException], ...] = ()
    retry_s: float | None = None
    expected: tuple[type[BaseException], ...] = ()
    propagate: bool = False
    log_interval_s: float = 60.0

    def is_fatal(self, exc: BaseException) -> bool:
        """True if ``exc`` ends the loop."""
        return self.retry_s is None or isinstance(exc, self.fatal) or not isinstance(exc, Exception)


ALL_FATAL = ErrorPolicy()


class Runner:
    """Runs ``step`` until it returns ``None``, a stop is requested or a fatal error.

    ``wait`` / ``wake``: the loop's one wake-up (default: a fresh :class:`Wakeup`;
    the bridge passes its publisher's, which PUBACKs and connection events set).
    ``finish``: runs once after the loop ended without a fatal error (e.g. the
    bridge's graceful shutdown); its exceptions are fatal. ``close``: always runs
    last (this thread's resources). ``clock``: monotonic seconds, injectable;
    ``log``: the logger of the component the loop belongs to.
    """

    def __init__(
        self,
        name: str,
        step: Step,
        policy: ErrorPolicy = ALL_FATAL,
        *,
        wait: Callable[[float], object] | None = None,
        wake: Callable[[], None] | None = None,
        stop: StopRequest | None = None,
        max_wait: float = MAX_WAIT_S,
        finish: Callable[[], None] | None = None,
        close: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = logger,
    ) -> None:
        self.name = name
        self._logger = log
        self.policy = policy
        self._step = step
        wakeup = Wakeup()
        self._wait = wait or wakeup.wait
        self.wake = wake or wakeup.wake
        self.stop_request = stop or StopRequest()
        self.stop_request.on_set(self.wake)
        self.max_wait = max_wait
        self._finish = finish
        self._close = close
        self._clock = clock
        self._log = LogThrottle(policy.log_interval_s, clock)
        self.error: BaseException | None = None
        self.steps = 0  # steps that returned
        self.failures = 0  # steps that raised a retried exception

    def stop(self) -> None:
        """Request the stop: the loop ends after the current step (its wait ends at once)."""
        self.stop_request.set()

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self.stop_request.is_set()

    def run(self) -> None:
        """The loop (a thread's target): step, wait, until done, stopped or fatally failed."""
        try:
            while not self.stopping:
                delay = self._run_step()
                if delay is None or self.stopping:
                    break
                self._wait(min(max(0.0, delay), self.max_wait))
            if self.error is None and self._finish is not None:
                self._guarded(self._finish)
        finally:
            if self._close is not None:
                self._close()

    def _run_step(self) -> float | None:
        """One step under the error policy; the delay before the next (None: end)."""
        try:
            delay = self._step(self._clock())
        except BaseException as exc:  # noqa: BLE001 - the policy decides: fatal or retried
            if self.policy.is_fatal(exc):
                self._fatal(exc)
                return None
            self._retried(exc)
            return self.policy.retry_s
        self.steps += 1
        return delay

    def _guarded(self, call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - recorded (or raised) by _fatal
            self._fatal(exc)

    def _fatal(self, exc: BaseException) -> None:
        if self.policy.propagate:
            raise exc
        self.error = exc
        if isinstance(exc, self.policy.expected):
            self._logger.error("%s stopped: %s", self.name, exc)
        else:
            self._logger.error("%s stopped by an unexpected error", self.name, exc_info=exc)

    def _retried(self, exc: BaseException) -> None:
        self.failures += 1
        count = self._log.note(type(exc).__qualname__)  # one line per kind of error
        if count:
            self._logger.error(
                "%s failed (%d time(s) since the last message); retrying in %gs",
                self.name,
                count,
                self.policy.retry_s,
                exc_info=exc,
            )
