"""Clocks: wall time, monotonic time, boot identity and clock synchronisation.

The timestamps that end up in readings and in the spool's age and clock
correction logic come from a :class:`Clock` (tests pass a fake one); other
modules read ``time.monotonic()`` directly for their own timers (rate
limits, deadlines, the heartbeat). Whether the clock is synchronized is
decided here, by :func:`clock_is_synchronized`, for the sampler and for
``enqueue`` alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


class Clock(Protocol):
    """What the spool, sampler and bridge need to know about time."""

    def wall_us(self) -> int:
        """Wall-clock time, microseconds since the Unix epoch (UTC)."""
        ...

    def mono_ns(self) -> int:
        """Monotonic time in nanoseconds (only comparable within one boot)."""
        ...

    def boot_id(self) -> str:
        """An identifier of the current boot."""
        ...


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    """The kernel's boot id, or a per-process random one where there is none."""
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return _FALLBACK_BOOT_ID


_FALLBACK_BOOT_ID = uuid.uuid4().hex


class SystemClock:
    """The real clocks of this machine."""

    def __init__(self) -> None:
        self._boot_id = read_boot_id()

    def wall_us(self) -> int:
        """``time.time_ns() // 1000``."""
        return time.time_ns() // 1000

    def mono_ns(self) -> int:
        """``time.monotonic_ns()``."""
        return time.monotonic_ns()

    def boot_id(self) -> str:
        """The boot id read at construction."""
        return self._boot_id


# ------------------------------------------------------------ clock sync

SYNC_MARKER_PATH = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR = 5  # adjtimex(2) return value while STA_UNSYNC (or STA_CLOCKERR) is set
_TIMEX_BUFFER = 512  # larger than struct timex on every ABI; modes=0 means read only


class ClockSync(Protocol):
    """Answers "is the system clock synchronized (NTP, GPS, RTC)?"."""

    def is_synchronized(self) -> bool:
        """True when wall-clock timestamps taken now can be trusted."""
        ...


@functools.cache
def _adjtimex() -> Any:
    """libc's ``adjtimex``, looked up once (``find_library`` may run ldconfig)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.adjtimex
    except (OSError, AttributeError):
        return None


def adjtimex_state() -> int | None:
    """The kernel clock state from ``adjtimex(2)`` (read only), or None where unavailable."""
    adjtimex = _adjtimex()
    if adjtimex is None:
        return None
    buf = ctypes.create_string_buffer(_TIMEX_BUFFER)  # zeroed: modes = 0, nothing is set
    state = int(adjtimex(buf))
    return None if state < 0 else state


def clock_is_synchronized(
    marker: Path | None = None, kernel_state: Callable[[], int | None] | None = None
) -> bool:
    """THE clock-sync rule, shared by the sampler and ``enqueue``.

    Synchronized when systemd-timesyncd's ``marker`` file exists, else unless
    ``adjtimex(2)`` returns TIME_ERROR (the kernel's STA_UNSYNC bit, which
    chrony, ntpd and timesyncd clear once they discipline the clock). Where
    neither source exists (not Linux) the clock is assumed synchronized,
    since nothing better is known. ``marker`` defaults to
    :data:`SYNC_MARKER_PATH` and ``kernel_state`` to :func:`adjtimex_state`,
    both looked up at call time.
    """
    if (SYNC_MARKER_PATH if marker is None else marker).exists():
        return True
    state = (adjtimex_state if kernel_state is None else kernel_state)()
    return state is None or state != _TIME_ERROR


class SystemClockSync:
    """The real :class:`ClockSync`: :func:`clock_is_synchronized` with a fixed marker path."""

    def __init__(self, marker: Path | None = None) -> None:
        self.marker = marker

    def is_synchronized(self) -> bool:
        """True if the marker exists or the kernel does not report TIME_ERROR."""
        return clock_is_synchronized(self.marker)
