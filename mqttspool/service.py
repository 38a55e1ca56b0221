"""Wiring for ``mqttspool run`` and ``mqttspool drain``: threads, signals, heartbeat.

Threads of ``run``:

* main thread: sleeps until a signal, a component thread ending (a watcher
  thread per component joins it and wakes the main thread) or the heartbeat
  timer; signals, heartbeat (every :data:`~mqttspool.health.HEARTBEAT_S`
  into ``<spool>.health``, see :mod:`mqttspool.health`; never into the spool),
  supervision (restarts the components after spool corruption; any other
  error that stops a component, e.g. a spool file deleted under the daemon,
  is logged and ends ``run`` with exit 1);
* ``sampler``: reads sensors, one spool transaction per round;
* ``bridge``: drains the spool to the broker (:class:`~mqttspool.bridge.Bridge`);
* paho's network thread per connection (callbacks only enqueue events);
* optionally the Prometheus HTTP server.

Shutdown (SIGTERM, SIGINT or SIGHUP): stop sampling, let the bridge wait up to
``bridge.shutdown_timeout`` for in-flight acks and publish ``offline``, write a
``stopped`` heartbeat, record the clean stop in the spool (``meta.shutdown``,
fsync'd), close the spool, exit 0. A ``run`` or ``drain`` start records
``running`` first and, after an unclean stop at ``spool.synchronous =
"normal"``, begins a new epoch (:mod:`mqttspool.spool.epochs`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from mqttspool.bridge import (
    ACK_FLUSH_S,
    SETTLE_DELAY_S,
    Bridge,
    BridgeThread,
    Companion,
    build_bridge,
    will_for,
)
from mqttspool.config import Settings
from mqttspool.counters import Counters
from mqttspool.errors import SpoolCorruptError, SpoolError
from mqttspool.health import (
    HEARTBEAT_S,
    Heartbeat,
    heartbeat_path,
    sampler_stuck_limit,
    write_heartbeat,
)
from mqttspool.logthrottle import LogThrottle
from mqttspool.mqtt import MqttPublisher, client_id_for
from mqttspool.runner import ErrorPolicy, Runner, StopRequest
from mqttspool.sampler import SamplerThread, build_sampler
from mqttspool.spool import Spool, open_spool, recover_spool
from mqttspool.timekeeping import Clock, SystemClock

logger = logging.getLogger(__name__)

HEARTBEAT_WARN_S = 300.0  # at most one "cannot write the heartbeat" warning per 5 min

EXIT_OK, EXIT_FAIL = 0, 1
# SIGHUP too: a closed terminal or `kill -HUP` must not kill the daemon with 129
# (and skip the graceful shutdown); there is nothing to reload.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def make_companions(settings: Settings) -> list[Companion]:
    """Optional publishers beside the readings (Home Assistant discovery)."""
    if not settings.homeassistant.discovery:
        return []
    from mqttspool.homeassistant import HomeAssistantDiscovery  # noqa: PLC0415 - optional feature

    return [HomeAssistantDiscovery(settings)]


def make_bridge(
    settings: Settings,
    spool: Spool,
    clock: Clock,
    counters: Counters,
    *,
    daemon: bool = True,
) -> tuple[Bridge, MqttPublisher]:
    """A bridge with a real paho publisher.

    ``daemon`` (``run``): acknowledged rows wait up to ``SETTLE_DELAY_S`` to be deleted
    together (fewer, larger deletes), and a PUBACK wakes the bridge only when something
    waits on it (a full window, ``max_resend``, shutdown). Otherwise (``drain``): nothing
    more arrives, so deletes follow the acks closely and a batch never lingers.
    """
    publisher = MqttPublisher(
        settings.broker,
        client_id_for(settings.broker.client_id, settings.device.id),
        will_for(settings),
        consumer_topic=settings.bridge.consumer_topic,
    )
    bridge = build_bridge(
        settings,
        spool,
        publisher,
        clock,
        counters,
        make_companions(settings),
        settle_delay=SETTLE_DELAY_S if daemon else ACK_FLUSH_S,
        batch_linger=None if daemon else 0.0,
        lazy_acks=daemon,
    )
    return bridge, publisher


class Service:
    """``mqttspool run``: sampler + bridge until a signal."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.counters = Counters()
        self.stop_event = threading.Event()
        # Set by a stop request and by a watcher when a component thread ends: the
        # main thread sleeps on it (and the heartbeat timer) instead of polling.
        self._wake = threading.Event()
        self.spool: Spool | None = None
        self.bridge_thread: BridgeThread | None = None
        self.sampler_thread: SamplerThread | None = None
        self.bridge: Bridge | None = None
        self._metrics: Any = None
        self.recoveries = 0
        self.heartbeat_file = heartbeat_path(settings.spool.path)
        self._heartbeat_log = LogThrottle(HEARTBEAT_WARN_S)

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Signal handler: begin a graceful shutdown."""
        if signum is not None:
            logger.info("received %s: shutting down", signal.Signals(signum).name)
        self.stop_event.set()
        self._wake.set()

    def run(self) -> int:
        """Run until stopped; returns the exit code."""
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, self.request_stop)
        self.spool = open_spool(self.settings.spool, self.clock, integrity_check=True)
        code = EXIT_FAIL
        try:  # from here on every failure closes the spool and stops what was started
            self._start()
            code = self._supervise()
        finally:
            left = self._stop_components()
            self._heartbeat("stopped" if code == EXIT_OK else "failed")
            if code == EXIT_OK:
                self._record_clean_stop()
                queued = self.spool.depth()
            self.spool.close()
            if self._metrics is not None:
                self._metrics.stop()
        if code == EXIT_OK:
            logger.info(
                "stopped cleanly; %d reading(s) stay spooled (%d of them sent but not"
                " acknowledged: resent with the same id next time)",
                queued,
                left,
            )
        return code

    # ----------------------------------------------------------- internals

    def _start(self) -> None:
        assert self.spool is not None
        self.spool.begin_writing()  # a new epoch if the last stop may have lost commits
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

    def _start_components(self) -> None:
        assert self.spool is not None
        self.bridge, publisher = make_bridge(self.settings, self.spool, self.clock, self.counters)
        self.bridge_thread = BridgeThread(self.bridge, publisher.wake)
        sampler = build_sampler(self.settings, self.spool, self.counters, self.clock)
        self.sampler_thread = SamplerThread(sampler)
        self.bridge_thread.start()
        self.sampler_thread.start()
        for component in (self.bridge_thread, self.sampler_thread):
            self._watch(component)

    def _watch(self, component: BridgeThread | SamplerThread) -> None:
        """Wake the main thread when ``component``'s thread ends (a join, not a poll)."""

        def watch() -> None:
            component.join()
            self._wake.set()

        threading.Thread(target=watch, name="mqttspool-watch", daemon=True).start()

    def _stop_components(self) -> int:
        # A start that failed halfway leaves threads that were built but never started.
        if self.sampler_thread is not None and self.sampler_thread.is_alive():
            self.sampler_thread.stop()
            self.sampler_thread.join(10)
        if self.bridge_thread is None:
            return 0
        if self.bridge_thread.is_alive():
            self.bridge_thread.stop()
            self.bridge_thread.join(self.settings.bridge.shutdown_timeout + 5)
        return self.bridge_thread.left_unacked

    def _supervise(self) -> int:
        """Heartbeat and watch the components until a stop signal (0) or a fatal error (1)."""
        self._heartbeat("running")
        next_beat = time.monotonic() + HEARTBEAT_S
        while True:
            self._wake.wait(max(0.0, next_beat - time.monotonic()))
            self._wake.clear()
            if self.stop_event.is_set():
                return EXIT_OK
            error = self._component_error()
            if isinstance(error, SpoolCorruptError):
                self._recover_from_corruption()
            elif error is not None:
                _log_fatal(error)
                return EXIT_FAIL
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + HEARTBEAT_S
                self._heartbeat("running")

    def _component_error(self) -> BaseException | None:
        """The error that stopped the bridge or the sampler thread, if one did."""
        for name, thread in (("bridge", self.bridge_thread), ("sampler", self.sampler_thread)):
            if thread is not None and thread.error is not None:
                return thread.error
            if thread is not None and not thread.is_alive():
                return RuntimeError(f"the {name} thread ended without reporting an error")
        return None

    def _recover_from_corruption(self) -> None:
        assert self.spool is not None
        logger.error("spool corruption detected at runtime: quarantining and salvaging")
        self._stop_components()
        self.spool.close()
        self.spool = recover_spool(self.settings.spool, self.clock)
        # The salvaged file is a new spool: this run records itself in it (and judges
        # the copied shutdown record) before the sampler's first append.
        self.spool.begin_writing()
        self.recoveries += 1
        self._start_components()

    def _record_clean_stop(self) -> None:
        """Mark the spool cleanly stopped, unless a thread that may still write is alive."""
        assert self.spool is not None
        alive = [name for name, up in self._threads_alive().items() if up]
        try:
            if not alive:
                self.spool.mark_clean()
                return
        except SpoolError as exc:
            logger.warning(
                "cannot record the clean stop (%s); the next start begins a new epoch"
                " if spool.synchronous = normal",
                exc,
            )
            return
        logger.warning("the %s thread did not stop in time: not recording a clean stop", alive[0])

    def _threads_alive(self) -> dict[str, bool]:
        return {
            "sampler": bool(self.sampler_thread and self.sampler_thread.is_alive()),
            "bridge": bool(self.bridge_thread and self.bridge_thread.is_alive()),
        }

    def _heartbeat(self, state: str) -> None:
        if self.spool is None:
            return
        now = time.monotonic()
        sampler = self.sampler_thread
        beat = Heartbeat(
            state=state,
            pid=os.getpid(),
            wall_us=self.clock.wall_us(),
            threads=self._threads_alive(),
            connected=bool(self.bridge and self.bridge.connected),
            sampler_idle_s=None if sampler is None else now - sampler.last_round_mono,
            sampler_limit_s=None if sampler is None else _sampler_limit(sampler),
            unacked_for_s=unacked_for(self.bridge, now),
            unacked_limit_s=self._unacked_limit_s(),
            readings_paused=self.bridge.gate.paused if self.bridge else None,
        )
        try:
            write_heartbeat(self.heartbeat_file, beat)
        except OSError as exc:  # a missed heartbeat must not stop the daemon
            failures = self._heartbeat_log.note()
            if failures:
                logger.warning(
                    "cannot write the heartbeat %s (%d time(s) since the last message): %s",
                    self.heartbeat_file,
                    failures,
                    exc,
                )

    def _unacked_limit_s(self) -> float:
        return 3.0 * self.settings.bridge.ack_timeout

    def _start_metrics(self) -> None:
        if not self.settings.metrics.enabled:
            return
        from mqttspool.prometheus import MetricsServer  # noqa: PLC0415 - optional extra

        self._metrics = MetricsServer(self.settings, self.counters, self._stats_source)
        self._metrics.start()

    def _stats_source(self) -> Any:
        return self.spool.stats() if self.spool is not None else None


def _log_fatal(error: BaseException) -> None:
    if isinstance(error, SpoolError):
        # e.g. the spool file was deleted or replaced under the daemon: writing on
        # would lose every reading from now on, so stop loudly and let the
        # supervisor (systemd, Docker) restart us on the file that is there now.
        logger.error("spool %s can no longer be used (%s); stopping with exit 1", error.path, error)
    else:
        logger.error("stopping with exit 1 after an unexpected error: %r", error)


def _sampler_limit(thread: SamplerThread) -> float:
    return sampler_stuck_limit([sensor.interval for sensor in thread.sampler.sensors])


def unacked_for(bridge: Bridge | None, now: float) -> float | None:
    """Seconds the oldest in-flight message has waited for its PUBACK; None if none waits."""
    since = None if bridge is None else bridge.unacked_since()
    return None if since is None else max(0.0, now - float(since))


def _version() -> str:
    from mqttspool import __version__  # noqa: PLC0415 - avoid an import cycle

    return __version__


# ------------------------------------------------------------------ drain


DRAIN_CONNECT_S = 30.0  # without --timeout, drain gives up on a broker never reached in this
DRAIN_PROGRESS_S = 5.0  # one "drain: ... sent" line this often


@dataclass
class DrainResult:
    """Outcome of ``mqttspool drain``: published, left in the spool, rejected by the broker."""

    sent: int
    remaining: int
    connected: bool
    dead_lettered: int = 0  # PUBACK >= 0x80: moved to the dead-letter table
    interrupted: bool = False  # a stop request (SIGINT, SIGTERM) ended it
    last_failure: str = ""  # why the last connection attempt failed, if one did


def drain(
    settings: Settings,
    timeout: float | None,
    clock: Clock | None = None,
    stop: StopRequest | None = None,
) -> DrainResult:
    """Publish the backlog until the spool is empty, ``timeout`` expires or ``stop`` is set.

    An empty spool returns at once, without connecting. Without ``timeout``, a
    broker not reached within :data:`DRAIN_CONNECT_S` ends the drain; once
    connected, it reconnects until the spool is empty.
    """
    clock = clock or SystemClock()
    stop = stop or StopRequest()
    spool = open_spool(settings.spool, clock, integrity_check=True)
    try:
        spool.begin_writing()  # a new epoch if the last stop may have lost commits
        if spool.depth() == 0:
            spool.mark_clean()
            return DrainResult(0, 0, connected=False)
        bridge, publisher = make_bridge(settings, spool, clock, Counters(), daemon=False)
        try:
            return _drain_loop(settings, spool, bridge, publisher, timeout, stop)
        finally:
            publisher.close()
    finally:
        spool.close()


def _drain_loop(
    settings: Settings,
    spool: Spool,
    bridge: Bridge,
    publisher: MqttPublisher,
    timeout: float | None,
    stop: StopRequest,
) -> DrainResult:
    logger.info("draining %d reading(s) to %s", spool.depth(), settings.broker.address())
    state = _DrainState(bridge, spool, timeout, time.monotonic())
    # Errors reach the caller (the CLI names them); paho events and a stop request
    # end a wait early, so the loop sleeps until the bridge's next timer.
    runner = Runner(
        "drain",
        state.step,
        ErrorPolicy(propagate=True),
        wait=publisher.wait,
        wake=publisher.wake,
        stop=stop,
    )
    runner.run()
    # Settle what is acknowledged (a stop request included), then record a clean stop.
    bridge.shutdown(min(settings.bridge.shutdown_timeout, 5.0), time.monotonic, publisher.wait)
    spool.mark_clean()
    return DrainResult(
        bridge.published_total,
        spool.depth(),
        state.ever_connected,
        bridge.rejected_total,
        interrupted=stop.is_set() and spool.depth() > 0,
        last_failure=bridge.last_failure,
    )


class _DrainState:
    """drain's step: the bridge's step, when to end (spool empty, deadline), progress lines."""

    def __init__(self, bridge: Bridge, spool: Spool, timeout: float | None, start: float) -> None:
        self.bridge = bridge
        self.spool = spool
        self.timeout = timeout
        self.deadline = start + (DRAIN_CONNECT_S if timeout is None else timeout)
        self.next_progress = start + DRAIN_PROGRESS_S
        self.ever_connected = False

    def step(self, now: float) -> float | None:
        """One bridge step; None once the drain is over, else seconds until the next."""
        bridge = self.bridge
        delay = bridge.step(now)
        self.ever_connected = self.ever_connected or bridge.connected
        if bridge.drained and self.spool.depth() == 0:
            return None
        if now >= self.deadline and self._deadline_applies():
            return None
        if now >= self.next_progress:
            self.next_progress = now + DRAIN_PROGRESS_S
            _log_progress(bridge, self.spool)
        due = [delay, self.next_progress - now]
        if self._deadline_applies():
            due.append(self.deadline - now)
        return min(due)

    def _deadline_applies(self) -> bool:
        # Without --timeout the deadline only bounds reaching the broker at all.
        return self.timeout is not None or not self.ever_connected


def _log_progress(bridge: Bridge, spool: Spool) -> None:
    logger.info(
        "drain: %d sent, %d in flight, %d remaining",
        bridge.published_total,
        bridge.inflight,
        spool.depth(),
    )
