"""The bridge's thread: a :class:`~mqttspool.runner.Runner` of :meth:`Bridge.step`, then
the graceful shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mqttspool.errors import SpoolCorruptError, SpoolGoneError
from mqttspool.runner import ErrorPolicy, Runner

from .core import Bridge

logger = logging.getLogger("mqttspool.bridge")

# Every error stops the bridge: the supervisor (the service) salvages a corrupt
# spool and restarts it, or stops with exit 1. Retrying here would hide the error.
BRIDGE_POLICY = ErrorPolicy(expected=(SpoolCorruptError, SpoolGoneError))


class BridgeThread:
    """Runs :meth:`Bridge.step` in a thread until :meth:`stop`; then shuts down cleanly.

    Between steps it waits for the delay the step returned on the publisher's
    wake-up: a paho event (PUBACK, CONNACK, disconnect) or ``wake`` -- which the
    spool calls after every commit of new rows in this process, and a stop
    request -- ends the wait early.
    """

    def __init__(self, bridge: Bridge, wake: Callable[[], None]) -> None:
        self.bridge = bridge
        self._wake = wake
        self.left_unacked = 0
        self.runner = Runner(
            "bridge",
            bridge.step,
            BRIDGE_POLICY,
            wait=bridge.publisher.wait,
            wake=wake,
            finish=self._shutdown,
            close=self._close,
            log=logger,
        )
        self._thread = threading.Thread(target=self.runner.run, name="bridge", daemon=True)

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the bridge (None while it runs or after a clean stop)."""
        return self.runner.error

    def start(self) -> None:
        """Start the thread; rows this process commits to the spool wake it."""
        self.bridge.spool.appended.subscribe(self._wake)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to finish (graceful shutdown follows in the thread)."""
        self.runner.stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread."""
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def _shutdown(self) -> None:
        bridge = self.bridge
        self.left_unacked = bridge.shutdown(
            bridge.cfg.shutdown_timeout, time.monotonic, bridge.publisher.wait
        )

    def _close(self) -> None:
        bridge = self.bridge
        try:
            if self.runner.error is not None:
                bridge.publisher.close()
        finally:
            bridge.spool.appended.unsubscribe(self._wake)
            bridge.spool.close()  # this thread's SQLite connection
