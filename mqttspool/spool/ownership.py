"""Who owns a spool: one ``run`` or ``drain`` at a time, the others only look.

``<spool>.lock`` is held (``flock``, exclusive) by the ``run`` or ``drain``
that publishes from the spool; it holds that process's PID. Short-lived
writers (``enqueue``, ``dead-letters requeue``) never take it: they only ask
:func:`lock_holder` whether a publisher is alive, because that decides
whether a ``running:`` shutdown record belongs to a live process or to one
that was cut (see :mod:`mqttspool.spool.epochs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from mqttspool.errors import SpoolError
from mqttspool.timekeeping import read_boot_id

LOCK_SUFFIX = ".lock"
# A short-lived writer's probe holds a shared lock for microseconds: a starting
# run or drain tries again for this long before it calls the spool busy.
ACQUIRE_RETRY_S = 0.5
_RETRY_STEP_S = 0.01


def lock_path(spool_path: str | Path) -> Path:
    """``<spool>.lock``."""
    return Path(f"{spool_path}{LOCK_SUFFIX}")


def writer_identity(pid: int | str | None = None) -> str:
    """``"<pid> <boot id>"``: names a process exactly (a PID alone recurs after a reboot)."""
    return f"{os.getpid() if pid is None else pid} {read_boot_id()}"


def lock_holder(spool_path: str | Path) -> str | None:
    """The :func:`writer_identity` of the ``run``/``drain`` holding the lock, or None.

    Never creates the lock file and never blocks.
    """
    try:
        fd = os.open(lock_path(spool_path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: no run or drain ever held it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return writer_identity(pid or "unknown")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class SpoolLock:
    """One ``run`` or ``drain`` per spool: an exclusive ``flock`` on ``<spool>.lock``.

    The file holds the owner's PID for the refusal message. The kernel drops
    the lock when the owner exits however it ends (kill -9 included), so a
    stale lock file never blocks a restart. ``enqueue``, ``status`` and
    ``dead-letters`` do not take it: SQLite serialises their writes.
    """

    def __init__(self, spool_path: str | Path) -> None:
        self.spool_path = Path(spool_path)
        self.path = lock_path(spool_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`SpoolError` naming the holder's PID."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise SpoolError(
                self.spool_path, f"cannot open the lock file {self.path}: {exc.strerror}"
            ) from exc
        if not _flock_exclusive(fd):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SpoolError(
                self.spool_path,
                f"in use by another mqttspool run or drain (PID {holder}, lock {self.path});"
                " stop that process first, or give this one its own spool.path",
            )
        with contextlib.suppress(OSError):  # the PID is for messages only (the disk may be full)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the file stays: deleting it would race with the next owner)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SpoolLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _flock_exclusive(fd: int) -> bool:
    """Take the exclusive lock, waiting out a short-lived writer's probe; False if held."""
    deadline = time.monotonic() + ACQUIRE_RETRY_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
        time.sleep(_RETRY_STEP_S)
