"""Wiring for ``mqttspool run`` and ``mqttspool drain``: threads, signals, heartbeat.

Threads of ``run``:

* main thread: signals, heartbeat (every :data:`HEARTBEAT_S` into the spool's
  meta table), supervision (restarts the components after spool corruption);
* ``sampler``: reads sensors, one spool transaction per round;
* ``bridge``: drains the spool to the broker (:class:`~mqttspool.bridge.Bridge`);
* paho's network thread per connection (callbacks only enqueue events);
* optionally the Prometheus HTTP server.

Shutdown (SIGTERM/SIGINT): stop sampling, let the bridge wait up to
``bridge.shutdown_timeout`` for in-flight acks and publish ``offline``, write a
``stopped`` heartbeat, close the spool, exit 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from mqttspool.bridge import Bridge, BridgeThread, Companion, will_for
from mqttspool.config import Settings
from mqttspool.counters import Counters
from mqttspool.errors import SpoolCorruptError
from mqttspool.health import HEARTBEAT_KEY, HEARTBEAT_S, Health, judge_heartbeat
from mqttspool.mqtt import MqttPublisher, client_id_for
from mqttspool.sampler import SamplerThread, build_sampler
from mqttspool.spool import (
    Spool,
    classify_file,
    open_spool,
    recover_spool,
)
from mqttspool.spool.readonly import read_meta_if_ours
from mqttspool.timekeeping import Clock, SystemClock

logger = logging.getLogger(__name__)

SUPERVISE_S = 0.5  # how often the main thread checks its threads

EXIT_OK, EXIT_FAIL = 0, 1


def make_companions(settings: Settings) -> list[Companion]:
    """Optional publishers beside the readings (Home Assistant discovery)."""
    if not settings.homeassistant.discovery:
        return []
    from mqttspool.homeassistant import HomeAssistantDiscovery  # noqa: PLC0415 - optional feature

    return [HomeAssistantDiscovery(settings)]


def make_bridge(
    settings: Settings, spool: Spool, clock: Clock, counters: Counters
) -> tuple[Bridge, MqttPublisher]:
    """A bridge with a real paho publisher."""
    publisher = MqttPublisher(
        settings.broker, client_id_for(settings.broker, settings.device.id), will_for(settings)
    )
    bridge = Bridge(settings, spool, publisher, clock, counters, make_companions(settings))
    return bridge, publisher


class Service:
    """``mqttspool run``: sampler + bridge until a signal."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.counters = Counters()
        self.stop_event = threading.Event()
        self.spool: Spool | None = None
        self.bridge_thread: BridgeThread | None = None
        self.sampler_thread: SamplerThread | None = None
        self.bridge: Bridge | None = None
        self._metrics: Any = None
        self.recoveries = 0

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Signal handler: begin a graceful shutdown."""
        if signum is not None:
            logger.info("received %s: shutting down", signal.Signals(signum).name)
        self.stop_event.set()

    def run(self) -> int:
        """Run until stopped; returns the exit code."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        self.spool = open_spool(self.settings.spool, self.clock, integrity_check=True)
        logger.info(
            "mqttspool %s starting: device %s, spool %s (epoch %s, %d queued), broker %s",
            _version(),
            self.settings.device.id,
            self.spool.path,
            self.spool.epoch,
            self.spool.depth(),
            self.settings.broker.address(),
        )
        self._start_metrics()
        self._start_components()
        try:
            self._supervise()
        finally:
            left = self._stop_components()
            self._heartbeat("stopped")
            self.spool.close()
            if self._metrics is not None:
                self._metrics.stop()
        logger.info("stopped cleanly; %d reading(s) left unacknowledged stay spooled", left)
        return EXIT_OK

    # ----------------------------------------------------------- internals

    def _start_components(self) -> None:
        assert self.spool is not None
        self.bridge, publisher = make_bridge(self.settings, self.spool, self.clock, self.counters)
        self.bridge_thread = BridgeThread(self.bridge, publisher.wake)
        sampler = build_sampler(self.settings, self.spool, self.counters, self.clock)
        self.sampler_thread = SamplerThread(sampler)
        self.bridge_thread.start()
        self.sampler_thread.start()

    def _stop_components(self) -> int:
        if self.sampler_thread is not None:
            self.sampler_thread.stop()
            self.sampler_thread.join(10)
        left = 0
        if self.bridge_thread is not None:
            self.bridge_thread.stop()
            self.bridge_thread.join(self.settings.bridge.shutdown_timeout + 5)
            left = self.bridge_thread.left_unacked
        return left

    def _supervise(self) -> None:
        self._heartbeat("running")
        next_beat = time.monotonic() + HEARTBEAT_S
        while not self.stop_event.wait(SUPERVISE_S):
            errors = [
                self.bridge_thread.error if self.bridge_thread else None,
                self.sampler_thread.error if self.sampler_thread else None,
            ]
            if any(isinstance(e, SpoolCorruptError) for e in errors):
                self._recover_from_corruption()
            elif errors[0] is not None:
                raise errors[0]
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + HEARTBEAT_S
                self._heartbeat("running")

    def _recover_from_corruption(self) -> None:
        assert self.spool is not None
        logger.error("spool corruption detected at runtime: quarantining and salvaging")
        self._stop_components()
        self.spool.close()
        self.spool = recover_spool(self.settings.spool, self.clock)
        self.recoveries += 1
        self._start_components()

    def _threads_alive(self) -> dict[str, bool]:
        return {
            "sampler": bool(self.sampler_thread and self.sampler_thread.is_alive()),
            "bridge": bool(self.bridge_thread and self.bridge_thread.is_alive()),
        }

    def _heartbeat(self, state: str) -> None:
        if self.spool is None:
            return
        doc = {
            "state": state,
            "pid": os.getpid(),
            "wall_us": self.clock.wall_us(),
            "threads": self._threads_alive(),
            "connected": bool(self.bridge and self.bridge.connected),
        }
        try:
            self.spool.write_meta(HEARTBEAT_KEY, json.dumps(doc))
        except Exception:  # a missed heartbeat must not stop the daemon
            logger.warning("could not write the heartbeat to the spool", exc_info=True)

    def _start_metrics(self) -> None:
        if not self.settings.metrics.enabled:
            return
        from mqttspool.prometheus import MetricsServer  # noqa: PLC0415 - optional extra

        self._metrics = MetricsServer(self.settings, self.counters, self._stats_source)
        self._metrics.start()

    def _stats_source(self) -> Any:
        return self.spool.stats() if self.spool is not None else None


def _version() -> str:
    from mqttspool import __version__  # noqa: PLC0415 - avoid an import cycle

    return __version__


# ------------------------------------------------------------------ drain


@dataclass
class DrainResult:
    """Outcome of ``mqttspool drain``: published, left in the spool, rejected by the broker."""

    sent: int
    remaining: int
    connected: bool
    dead_lettered: int = 0  # PUBACK >= 0x80: moved to the dead-letter table


def drain(settings: Settings, timeout: float | None, clock: Clock | None = None) -> DrainResult:
    """Publish the backlog until the spool is empty or ``timeout`` expires."""
    clock = clock or SystemClock()
    spool = open_spool(settings.spool, clock, integrity_check=True)
    bridge, publisher = make_bridge(settings, spool, clock, Counters())
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    total = spool.depth()
    logger.info("draining %d reading(s) to %s", total, settings.broker.address())
    next_progress = start + 5.0
    ever_connected = False
    try:
        while True:
            now = time.monotonic()
            delay = bridge.step(now)
            ever_connected = ever_connected or bridge.connected
            if bridge.drained and spool.depth() == 0:
                break
            if deadline is not None and now >= deadline:
                break
            if now >= next_progress:
                next_progress = now + 5.0
                logger.info(
                    "drain: %d sent, %d in flight, %d remaining",
                    bridge.published_total,
                    bridge.inflight,
                    spool.depth(),
                )
            publisher.wait(min(delay, 0.25))
        bridge.shutdown(min(settings.bridge.shutdown_timeout, 5.0), time.monotonic, publisher.wait)
        return DrainResult(
            bridge.published_total, spool.depth(), ever_connected, bridge.rejected_total
        )
    finally:
        publisher.close()
        spool.close()


# ----------------------------------------------------------------- health


def check_health(settings: Settings, now_us: int | None = None) -> Health:
    """Healthy while a daemon runs: heartbeat fresh, state running, threads alive.

    The rules live in :func:`mqttspool.health.judge_heartbeat`, shared with
    the fast path the CLI takes for ``mqttspool health``.
    """
    path = Path(settings.spool.path)
    if classify_file(path) != "ours":
        return Health(False, f"no mqttspool spool at {path}")
    raw = _read_heartbeat(path)
    now_us = now_us if now_us is not None else time.time_ns() // 1000
    return judge_heartbeat(raw, now_us)


def _read_heartbeat(path: Path) -> str | None:
    return read_meta_if_ours(path, HEARTBEAT_KEY)
