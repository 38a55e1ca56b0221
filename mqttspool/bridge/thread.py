"""The bridge's thread: runs :meth:`Bridge.step` until stopped, then shuts down cleanly."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mqttspool.errors import SpoolCorruptError, SpoolGoneError

from .core import Bridge

logger = logging.getLogger("mqttspool.bridge")


class BridgeThread:
    """Runs :meth:`Bridge.step` in a thread until :meth:`stop`; then shuts down cleanly.

    Between steps it sleeps for the delay the step returned; ``wake`` (the
    publisher's) cuts the sleep short and is called by the spool after every
    commit of new rows in this process.
    """

    def __init__(self, bridge: Bridge, wake: Callable[[], None]) -> None:
        self.bridge = bridge
        self._wake = wake
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.left_unacked = 0
        self._thread = threading.Thread(target=self._run, name="bridge", daemon=True)

    def start(self) -> None:
        """Start the thread; rows this process commits to the spool wake it."""
        self.bridge.spool.appended.subscribe(self._wake)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to finish (graceful shutdown follows in the thread)."""
        self._stop.set()
        self._wake()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread."""
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def _run(self) -> None:
        bridge = self.bridge
        try:
            while not self._stop.is_set():
                delay = bridge.step(time.monotonic())
                bridge.publisher.wait(delay)
            self.left_unacked = bridge.shutdown(
                bridge.cfg.shutdown_timeout, time.monotonic, bridge.publisher.wait
            )
        except (SpoolCorruptError, SpoolGoneError) as exc:
            self.error = exc
            logger.error("bridge stopped: %s", exc)
            bridge.publisher.close()
        except BaseException as exc:
            self.error = exc
            logger.exception("bridge stopped by an unexpected error")
            bridge.publisher.close()
        finally:
            bridge.spool.appended.unsubscribe(self._wake)
            bridge.spool.close()  # this thread's SQLite connection
