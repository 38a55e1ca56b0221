"""The sampler: polls every sensor on its own interval and spools each round at once.

:class:`Sampler` is pure logic driven by :meth:`Sampler.step` (tests use a
fake clock); :class:`SamplerThread` is the thin thread around it. One round
reads every due sensor and stores all their readings with ONE
:meth:`Spool.append` (one transaction, so one fsync group per round).

Failures: a failing sensor is counted (``sensor_reads_total{result="error"}``),
logged once when it starts failing and once when it recovers, and retried
with backoff (its interval, doubling up to ``MAX_BACKOFF_FACTOR`` × interval,
reset on success). It never stops the other sensors.

Time: each reading records whether the system clock was synchronized (read
at most every ``CLOCK_SYNC_CHECK_S``). When sync is first seen (in this
process, or again after it was lost), rows of the current boot spooled
unsynced are re-timed from monotonic time via :meth:`Spool.correct_clock`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from mqttspool.config import Settings
from mqttspool.counters import SENSOR_READS, Counters
from mqttspool.errors import (
    SensorError,
    SpoolCorruptError,
    SpoolError,
    SpoolFullError,
    SpoolGoneError,
)
from mqttspool.logthrottle import LogThrottle
from mqttspool.reading import Reading, from_us, reading_error_from
from mqttspool.runner import ErrorPolicy, Runner
from mqttspool.sensors.base import Measurement, Sensor
from mqttspool.sensors.registry import build_sensors, default_spool_dir
from mqttspool.spool import Spool, count_lost_to_corruption
from mqttspool.timekeeping import Clock, ClockSync, SystemClock, SystemClockSync

logger = logging.getLogger(__name__)

MAX_BACKOFF_FACTOR = 10.0
FULL_LOG_INTERVAL_S = 60.0
IDLE_WAIT_S = 60.0  # upper bound on one wait, so stop() is never the only wake-up
ERROR_WAIT_S = 1.0  # after an unexpected error in step()
# Whether the clock is synchronized is read at most this often (its first read after
# a one-second sleep cost a tenth of a sampling round). A reading taken in the few
# seconds after sync is flagged unsynced and re-timed with the others.
CLOCK_SYNC_CHECK_S = 5.0
_READINGS = TypeAdapter(list[Reading])

# Corrupt: the service quarantines and salvages the spool, then restarts us. Gone:
# the service must stop (exit 1). Anything else (a bug, an odd sensor library) is
# logged and the round retried: sampling must not end on one bad round.
SAMPLER_POLICY = ErrorPolicy(
    fatal=(SpoolCorruptError, SpoolGoneError),
    retry_s=ERROR_WAIT_S,
    expected=(SpoolCorruptError, SpoolGoneError),
)


@dataclass
class _SensorState:
    sensor: Sensor
    next_due_ns: int
    failing: bool = False
    failures: int = 0
    backoff_s: float = 0.0


_Polled = tuple[_SensorState, list[dict[str, object]]]  # a sensor read this round, its docs


class Sampler:
    """Runs due sensors, builds readings and stores each round in one transaction."""

    def __init__(
        self,
        sensors: list[Sensor],
        device: str,
        spool: Spool,
        counters: Counters,
        clock: Clock,
        sync: ClockSync,
    ) -> None:
        self.sensors = list(sensors)
        self.device = device
        self.spool = spool
        self.counters = counters
        self.clock = clock
        self.sync = sync
        start = clock.mono_ns()
        self._states = [_SensorState(s, start) for s in self.sensors]
        self._synced: bool | None = None  # unknown until the first step
        self._sync_checked_ns = 0
        self._full_log = LogThrottle(FULL_LOG_INTERVAL_S)
        self.rounds = 0
        # False after a round whose readings the spool refused: not a finished round
        # for health (which must go red while nothing is stored).
        self.round_stored = True

    def step(self) -> float:
        """Run every due sensor, append their readings at once; seconds until the next is due."""
        synced = self._check_sync()
        now = self.clock.mono_ns()
        polled: list[_Polled] = []
        for state in self._states:
            if state.next_due_ns <= now:
                docs = self._poll(state, synced)
                if docs is not None:
                    polled.append((state, docs))
        readings = self._validated(polled)
        self.round_stored = self._store(readings) if readings else True
        self.rounds += 1
        return self.seconds_until_due()

    def seconds_until_due(self) -> float:
        """Seconds from now until the earliest sensor is due (0 if one is overdue)."""
        if not self._states:
            return IDLE_WAIT_S
        now = self.clock.mono_ns()
        nearest = min(s.next_due_ns for s in self._states)
        return max(0.0, (nearest - now) / 1e9)

    def close(self) -> None:
        """Close every sensor (buses, files)."""
        for sensor in self.sensors:
            try:
                sensor.close()
            except Exception:
                logger.warning("sensor %s: close failed", sensor.name, exc_info=True)

    # ------------------------------------------------------------------ time

    def _check_sync(self) -> bool:
        now = self.clock.mono_ns()
        if self._synced is not None and now - self._sync_checked_ns < CLOCK_SYNC_CHECK_S * 1e9:
            return self._synced
        self._sync_checked_ns = now
        synced = self.sync.is_synchronized()
        if synced and self._synced is not True:
            self._correct_unsynced_rows()
        elif not synced and self._synced is not False:
            logger.warning(
                "system clock is not synchronized: readings are flagged time_synced=false"
                " and re-timed once the clock syncs"
            )
        self._synced = synced
        return synced

    def _correct_unsynced_rows(self) -> None:
        boot = self.clock.boot_id()
        wall_us, mono_ns = self.clock.wall_us(), self.clock.mono_ns()
        try:
            fixed = self.spool.correct_clock(boot, wall_us, mono_ns)
        except (SpoolCorruptError, SpoolGoneError):
            raise  # the service salvages (corrupt) or stops (gone); not ours to swallow
        except Exception:
            logger.exception("clock synchronized, but re-timing unsynced readings failed")
            return
        if fixed:
            logger.info(
                "clock synchronized: re-timed %d reading(s) taken before sync in this boot", fixed
            )

    # --------------------------------------------------------------- sensors

    def _poll(self, state: _SensorState, synced: bool) -> list[dict[str, object]] | None:
        """Read one due sensor: its reading documents, or None if the read failed (counted)."""
        sensor = state.sensor
        try:
            return self._docs(sensor, sensor.read(), synced)
        except SensorError as exc:
            self._failed(state, str(exc))
        except Exception as exc:
            logger.debug("sensor %s raised", sensor.name, exc_info=True)
            self._failed(state, f"sensor {sensor.name}: unexpected {type(exc).__name__}: {exc}")
        return None

    def _validated(self, polled: list[_Polled]) -> list[Reading]:
        """The round's readings, validated in ONE pydantic call (its per-call overhead was a
        fifth of a reading's validation, and each sensor's own call cost more once a
        second than in a loop). On an invalid one, again sensor by sensor, so the
        error names its sensor and field and the other sensors' readings are kept."""
        try:
            readings = _READINGS.validate_python([doc for _, docs in polled for doc in docs])
        except ValidationError:
            readings = []
            for state, docs in polled:
                try:
                    readings.extend(self._validate(state.sensor, docs))
                except SensorError as exc:
                    self._failed(state, str(exc))
                else:
                    self._succeeded(state)
            return readings
        for state, _ in polled:
            self._succeeded(state)
        return readings

    def _docs(
        self, sensor: Sensor, measurements: list[Measurement], synced: bool
    ) -> list[dict[str, object]]:
        ts = from_us(self.clock.wall_us())
        return [
            {
                "device": self.device,
                "sensor": sensor.name,
                "metric": m.metric,
                "value": m.value,
                "unit": m.unit,
                "ts": ts,
                "time_synced": synced,
            }
            for m in measurements
        ]

    def _readings(
        self, sensor: Sensor, measurements: list[Measurement], synced: bool
    ) -> list[Reading]:
        """One sensor's readings, validated (raises SensorError naming the field)."""
        return self._validate(sensor, self._docs(sensor, measurements, synced))

    def _validate(self, sensor: Sensor, docs: list[dict[str, object]]) -> list[Reading]:
        try:
            return _READINGS.validate_python(docs)  # one validator call for the sensor
        except ValidationError:
            pass
        # Invalid: again one at a time, so the error names the field as it always did
        # ("value", not "1.value").
        try:
            return [Reading.model_validate(doc) for doc in docs]
        except ValidationError as exc:
            raise SensorError(sensor.name, f"invalid reading: {reading_error_from(exc)}") from exc

    def _succeeded(self, state: _SensorState) -> None:
        sensor = state.sensor
        self.counters.inc(SENSOR_READS, (sensor.name, "ok"))
        if state.failing:
            logger.info("sensor %s: recovered after %d failed read(s)", sensor.name, state.failures)
        state.failing, state.failures, state.backoff_s = False, 0, 0.0
        interval_ns = int(sensor.interval * 1e9)
        now = self.clock.mono_ns()
        state.next_due_ns += interval_ns
        if state.next_due_ns <= now:
            # Overran (slow read, suspended process): skip the missed slots, keep cadence.
            missed = (now - state.next_due_ns) // interval_ns + 1
            state.next_due_ns += missed * interval_ns

    def _failed(self, state: _SensorState, message: str) -> None:
        sensor = state.sensor
        self.counters.inc(SENSOR_READS, (sensor.name, "error"))
        state.failures += 1
        cap = sensor.interval * MAX_BACKOFF_FACTOR
        state.backoff_s = sensor.interval if state.backoff_s == 0 else min(cap, state.backoff_s * 2)
        state.next_due_ns = self.clock.mono_ns() + int(state.backoff_s * 1e9)
        if not state.failing:
            state.failing = True
            logger.warning("%s (retrying with backoff up to %gs)", message, cap)
        else:
            logger.debug(
                "%s (failure %d, next try in %gs)", message, state.failures, state.backoff_s
            )

    def status(self) -> dict[str, bool]:
        """Sensor name -> currently failing (for health and tests)."""
        return {s.sensor.name: s.failing for s in self._states}

    # ----------------------------------------------------------------- spool

    def _store(self, readings: list[Reading]) -> bool:
        """Append one round; False if the spool stored none of it (counted and logged)."""
        try:
            self.spool.append(readings, clock_stamped=True)  # ts taken from our clock
        except SpoolFullError as exc:
            self._log_full(exc)
            return False
        except SpoolCorruptError:
            # The service quarantines and salvages the file; the salvage counts
            # this round as dropped (reason corrupt).
            count_lost_to_corruption(self.spool.path, len(readings))
            raise
        except SpoolGoneError:
            raise  # the file was deleted or replaced: the service must stop
        except SpoolError as exc:
            # e.g. the database stayed locked past the busy timeout: the round is lost,
            # but never silently.
            self.spool.count_drop("spool_error", len(readings))
            logger.error("%s: %d reading(s) of this round dropped", exc, len(readings))
            return False
        return True

    def _log_full(self, exc: SpoolFullError) -> None:
        # The spool already counted the readings as dropped (reason disk_full).
        count = self._full_log.note(n=exc.dropped)
        if count:
            logger.error(
                "%s (%d reading(s) since the last message; sampling continues)", exc, count
            )


class SamplerThread:
    """A daemon thread: a :class:`~mqttspool.runner.Runner` of :meth:`Sampler.step`.

    It waits until the next sensor is due (at most ``IDLE_WAIT_S``); a stop
    request ends the wait. Errors: see :data:`SAMPLER_POLICY`.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.last_round_mono = time.monotonic()
        self.runner = Runner(
            "sampling",
            self._step,
            SAMPLER_POLICY,
            max_wait=IDLE_WAIT_S,
            close=self._close,
            log=logger,
        )
        self._thread = threading.Thread(
            target=self.runner.run, name="mqttspool-sampler", daemon=True
        )

    @property
    def error(self) -> BaseException | None:
        """The spool error that stopped sampling (None while it runs or after a clean stop)."""
        return self.runner.error

    def start(self) -> None:
        """Start sampling (the first round runs at once)."""
        self.last_round_mono = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop; wakes it at once (a round in progress finishes first)."""
        self.runner.stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def _step(self, now: float) -> float:
        delay = self.sampler.step()
        if self.sampler.round_stored:  # a round nothing was stored of is not done
            self.last_round_mono = time.monotonic()
        return delay

    def _close(self) -> None:
        self.sampler.close()
        self.sampler.spool.close()  # this thread's SQLite connection


def build_sampler(
    settings: Settings,
    spool: Spool,
    counters: Counters,
    clock: Clock | None = None,
    sync: ClockSync | None = None,
) -> Sampler:
    """The sampler for ``settings.sensors`` (validated; raises ConfigError), real drivers."""
    sensors = build_sensors(settings.sensors, spool_dir=default_spool_dir(settings.spool.path))
    return Sampler(
        sensors,
        settings.device.id,
        spool,
        counters,
        clock or SystemClock(),
        sync or SystemClockSync(),
    )


__all__ = ["Sampler", "SamplerThread", "build_sampler"]
