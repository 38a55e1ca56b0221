"""Sampler driven by a fake clock: intervals, one transaction per round, failures, time sync."""

from __future__ import annotations

import logging
import math
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes.clock import FakeClock, FakeClockSync
from fakes.validator import CountingValidator

import mqttspool.sampler as sampler_module
from mqttspool.config import Settings, SpoolConfig
from mqttspool.counters import SENSOR_READS, Counters
from mqttspool.errors import SensorError, SpoolError, SpoolFullError
from mqttspool.reading import Reading
from mqttspool.sampler import Sampler, SamplerThread, build_sampler
from mqttspool.sensors.base import BaseSensor, Measurement
from mqttspool.spool import AppendResult, Spool, open_spool

Outcome = list[Measurement] | Exception


class ScriptedSensor(BaseSensor):
    """Returns scripted outcomes (the last one repeats); records the fake time of each read."""

    def __init__(
        self, name: str, interval: float, clock: FakeClock, outcomes: Sequence[Outcome] = ()
    ) -> None:
        super().__init__(name, interval)
        self.clock = clock
        self.outcomes = list(outcomes) or [[Measurement("value", 1.0, "u")]]
        self.read_at: list[float] = []
        self.closed = False

    def read(self) -> list[Measurement]:
        self.read_at.append((self.clock.mono - START_MONO) / 1e9)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def close(self) -> None:
        self.closed = True


START_MONO = 1_000_000_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool(tmp_path: Path, clock: FakeClock) -> Iterator[Spool]:
    s = open_spool(SpoolConfig(path=str(tmp_path / "spool.db")), clock=clock)
    yield s
    s.close()


class AppendCounter:
    """Wraps ``spool.append`` and records each call's batch size."""

    def __init__(self, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[int] = []
        original = spool.append

        def append(readings: Sequence[Reading], clock_stamped: bool = False) -> AppendResult:
            self.batches.append(len(readings))
            return original(readings, clock_stamped)

        monkeypatch.setattr(spool, "append", append)


def _rows(spool: Spool) -> list[tuple[str, int, int]]:
    with sqlite3.connect(spool.path) as conn:
        rows = conn.execute("SELECT sensor, ts_us, time_synced FROM reading ORDER BY seq")
        return [(r[0], int(r[1]), int(r[2])) for r in rows.fetchall()]


def _run(sampler: Sampler, clock: FakeClock, seconds: float) -> None:
    """Step the sampler, advancing the fake clock by what step() asks for, for ``seconds``."""
    end = clock.mono + int(seconds * 1e9)
    while True:
        delay = sampler.step()
        if clock.mono + int(delay * 1e9) > end:
            break
        clock.advance(delay)


def _sampler(
    sensors: list[BaseSensor], spool: Spool, clock: FakeClock, sync: FakeClockSync | None = None
) -> tuple[Sampler, Counters]:
    counters = Counters()
    sampler = Sampler(list(sensors), "edge-01", spool, counters, clock, sync or FakeClockSync(True))
    return sampler, counters


def test_intervals_are_honoured(spool: Spool, clock: FakeClock) -> None:
    fast = ScriptedSensor("fast", 2, clock)
    slow = ScriptedSensor("slow", 5, clock)
    sampler, _ = _sampler([fast, slow], spool, clock)
    _run(sampler, clock, 10)
    assert fast.read_at == [0, 2, 4, 6, 8, 10]
    assert slow.read_at == [0, 5, 10]


def test_step_returns_seconds_until_next_due(spool: Spool, clock: FakeClock) -> None:
    sampler, _ = _sampler(
        [ScriptedSensor("a", 3, clock), ScriptedSensor("b", 7, clock)], spool, clock
    )
    assert sampler.step() == 3.0
    clock.advance(1)
    assert sampler.step() == 2.0


def test_one_append_per_round_with_all_readings(
    spool: Spool, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = AppendCounter(spool, monkeypatch)
    two = [Measurement("t", 1.0, "°C"), Measurement("h", 2.0, "%RH")]
    sensors: list[BaseSensor] = [
        ScriptedSensor("a", 10, clock, [two]),
        ScriptedSensor("b", 10, clock),
        ScriptedSensor("c", 20, clock),
    ]
    sampler, _ = _sampler(sensors, spool, clock)
    _run(sampler, clock, 20)
    assert counter.batches == [4, 3, 4]  # rounds at 0 s, 10 s, 20 s
    assert spool.stats().depth == 11


def test_a_round_with_nothing_due_does_not_touch_the_spool(
    spool: Spool, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = AppendCounter(spool, monkeypatch)
    sampler, _ = _sampler([ScriptedSensor("a", 10, clock)], spool, clock)
    sampler.step()
    clock.advance(5)
    sampler.step()
    assert counter.batches == [1]


def test_failing_sensor_does_not_stop_others(
    spool: Spool, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    broken = ScriptedSensor("broken", 10, clock, [SensorError("broken", "no device answered", 121)])
    good = ScriptedSensor("good", 10, clock)
    sampler, counters = _sampler([broken, good], spool, clock)
    with caplog.at_level(logging.DEBUG, logger="mqttspool.sampler"):
        _run(sampler, clock, 30)
    assert good.read_at == [0, 10, 20, 30]
    assert [r[0] for r in _rows(spool)] == ["good"] * 4
    assert counters.counter(SENSOR_READS, ("good", "ok")) == 4
    assert counters.counter(SENSOR_READS, ("broken", "error")) == len(broken.read_at)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "broken" in r.message]
    assert len(warnings) == 1  # logged once, on the ok -> failing change
    assert "sensor broken: no device answered" in warnings[0].message
    assert sampler.status() == {"broken": True, "good": False}


def test_backoff_doubles_up_to_ten_intervals_and_resets_on_success(
    spool: Spool, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    err = SensorError("flaky", "CRC mismatch")
    ok = [Measurement("v", 1.0, None)]
    flaky = ScriptedSensor("flaky", 1, clock, [err, err, err, err, err, err, ok])
    sampler, counters = _sampler([flaky], spool, clock)
    with caplog.at_level(logging.INFO, logger="mqttspool.sampler"):
        _run(sampler, clock, 60)
    # failures at 0, then waits of 1, 2, 4, 8, 10 (capped), 10 -> success at 35, then every 1 s.
    assert flaky.read_at[:8] == [0, 1, 3, 7, 15, 25, 35, 36]
    assert counters.counter(SENSOR_READS, ("flaky", "error")) == 6
    assert counters.counter(SENSOR_READS, ("flaky", "ok")) == 26
    recovered = [r.message for r in caplog.records if "recovered" in r.message]
    assert recovered == ["sensor flaky: recovered after 6 failed read(s)"]


def test_driver_bug_is_contained(spool: Spool, clock: FakeClock) -> None:
    buggy = ScriptedSensor("buggy", 5, clock, [ZeroDivisionError("oops")])
    good = ScriptedSensor("good", 5, clock)
    sampler, counters = _sampler([buggy, good], spool, clock)
    sampler.step()
    assert counters.counter(SENSOR_READS, ("buggy", "error")) == 1
    assert [r[0] for r in _rows(spool)] == ["good"]


def test_invalid_measurement_counts_as_sensor_error(spool: Spool, clock: FakeClock) -> None:
    nan = ScriptedSensor("nan", 5, clock, [[Measurement("t", float("nan"), None)]])
    sampler, counters = _sampler([nan], spool, clock)
    sampler.step()
    assert counters.counter(SENSOR_READS, ("nan", "error")) == 1
    assert spool.stats().depth == 0


def test_an_invalid_reading_fails_its_sensor_and_keeps_the_others_of_the_round(
    spool: Spool, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    good = ScriptedSensor("good", 5, clock, [[Measurement("t", 21.5, "°C")]])
    nan = ScriptedSensor(
        "nan", 5, clock, [[Measurement("t", 1.0, None), Measurement("h", math.nan, "%")]]
    )
    later = ScriptedSensor("later", 5, clock, [[Measurement("t", 3.0, None)]])
    sampler, counters = _sampler([good, nan, later], spool, clock)
    sampler.step()
    assert [r[0] for r in _rows(spool)] == ["good", "later"]
    assert [
        counters.counter(SENSOR_READS, (name, result))
        for name in ("good", "nan", "later")
        for result in ("ok", "error")
    ] == [1, 0, 0, 1, 1, 0]
    assert sampler.status() == {"good": False, "nan": True, "later": False}
    assert (
        "sensor nan: invalid reading: value: must be a finite number"
        " (NaN and infinity are rejected) (got nan)"
    ) in caplog.text


def test_a_rounds_valid_readings_take_one_validator_call(
    spool: Spool, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = CountingValidator(sampler_module._READINGS)
    monkeypatch.setattr(sampler_module, "_READINGS", spy)
    two = [Measurement("t", 1.0, None), Measurement("h", 2.0, "%")]
    sensors = [ScriptedSensor(f"s{i}", 5, clock, [two]) for i in range(5)]
    sampler, _ = _sampler(list(sensors), spool, clock)
    sampler.step()
    assert spy.calls == [10]
    assert spool.stats().depth == 10


def test_overrun_skips_missed_slots(spool: Spool, clock: FakeClock) -> None:
    sensor = ScriptedSensor("s", 10, clock)
    sampler, _ = _sampler([sensor], spool, clock)
    sampler.step()
    clock.advance(35)  # the process was suspended
    sampler.step()
    assert sampler.step() == 5.0  # next slot on the original cadence: 40 s


def test_disk_full_is_logged_and_sampling_continues(
    spool: Spool,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def full(readings: Sequence[Reading], clock_stamped: bool = False) -> AppendResult:
        raise SpoolFullError(spool.path, "disk full", dropped=len(readings))

    monkeypatch.setattr(spool, "append", full)
    sensor = ScriptedSensor("s", 1, clock)
    sampler, _ = _sampler([sensor], spool, clock)
    with caplog.at_level(logging.ERROR, logger="mqttspool.sampler"):
        _run(sampler, clock, 5)
    assert sensor.read_at == [0, 1, 2, 3, 4, 5]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # rate-limited


def test_other_spool_error_drops_the_round_counted(
    spool: Spool, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_append = spool.append
    calls = {"n": 0}

    def locked_once(readings: Sequence[Reading], clock_stamped: bool = False) -> AppendResult:
        calls["n"] += 1
        if calls["n"] == 2:
            raise SpoolError(spool.path, "write failed: database is locked")
        return real_append(readings, clock_stamped)

    monkeypatch.setattr(spool, "append", locked_once)
    sensor = ScriptedSensor("s", 1, clock)
    sampler, _ = _sampler([sensor], spool, clock)
    _run(sampler, clock, 3)
    assert sensor.read_at == [0, 1, 2, 3]
    assert spool.stats().depth == 3
    assert spool.stats().dropped == {"spool_error": 1}


def test_readings_before_sync_are_flagged_then_corrected(spool: Spool, clock: FakeClock) -> None:
    sync = FakeClockSync(False)
    sensor = ScriptedSensor("s", 10, clock)
    sampler, _ = _sampler([sensor], spool, clock, sync)
    start_wall = clock.wall
    sampler.step()
    clock.advance(10)
    sampler.step()
    assert _rows(spool) == [("s", start_wall, 0), ("s", start_wall + 10_000_000, 0)]
    # NTP steps the wall clock forward by an hour; monotonic time is unaffected.
    clock.advance(5)
    clock.wall += 3600 * 1_000_000
    sync.synced = True
    sampler.step()
    synced_now = clock.wall
    assert _rows(spool) == [
        ("s", synced_now - 15_000_000, 1),
        ("s", synced_now - 5_000_000, 1),
    ]
    clock.advance(5)
    sampler.step()
    assert _rows(spool)[-1] == ("s", clock.wall, 1)


def test_clock_sync_is_read_at_most_every_five_seconds_and_seen_within_them(
    spool: Spool, clock: FakeClock
) -> None:
    sync = FakeClockSync(False)
    sampler, _ = _sampler([ScriptedSensor("s", 1, clock)], spool, clock, sync)
    _run(sampler, clock, 9)  # rounds at 0 ... 9 s
    assert sync.calls == 2  # at 0 and 5 s
    sync.synced = True  # NTP syncs just after the round at 9 s
    flags = []
    for _ in range(3):
        clock.advance(1)
        sampler.step()
        flags.append(_rows(spool)[-1][2])
    assert flags == [1, 1, 1]  # read again at 10 s: the first round after sync knows
    assert sync.calls == 3
    clock.advance(1)
    sync.synced = False  # lost again at 13 s
    sampler.step()
    assert _rows(spool)[-1][2] == 1  # not read before 15 s
    clock.advance(2)
    sampler.step()
    assert (_rows(spool)[-1][2], sync.calls) == (0, 4)


def test_rows_of_another_boot_are_not_corrected(spool: Spool, clock: FakeClock) -> None:
    sync = FakeClockSync(False)
    sampler, _ = _sampler([ScriptedSensor("s", 10, clock)], spool, clock, sync)
    sampler.step()
    old_wall = clock.wall
    clock.boot = "another-boot"
    sync.synced = True
    clock.advance(10)
    sampler.step()
    assert _rows(spool) == [("s", old_wall, 0), ("s", clock.wall, 1)]


def test_correct_clock_counts_rows(spool: Spool, clock: FakeClock) -> None:
    reading = Reading(
        device="d",
        sensor="s",
        metric="m",
        value=1.0,
        ts=datetime(2020, 1, 1, tzinfo=UTC),
        time_synced=False,
    )
    spool.append([reading, reading], clock_stamped=True)
    clock.advance(2)
    assert spool.correct_clock(clock.boot, 5_000_000_000, clock.mono) == 2
    assert [r[1] for r in _rows(spool)] == [5_000_000_000 - 2_000_000] * 2
    assert spool.correct_clock(clock.boot, 5_000_000_000, clock.mono) == 0


def test_thread_stops_promptly_and_closes_sensors(spool: Spool) -> None:
    real_clock = FakeClock()
    sensor = ScriptedSensor("s", 3600, real_clock)
    sampler, _ = _sampler([sensor], spool, real_clock)
    done = threading.Event()
    original_step = sampler.step

    def step() -> float:
        delay = original_step()
        done.set()
        return delay

    sampler.step = step  # type: ignore[method-assign]
    thread = SamplerThread(sampler)
    thread.start()
    assert done.wait(5)
    assert thread.is_alive()
    thread.stop()
    thread.join(2)  # the thread waits 60 s between rounds unless stop() wakes it
    assert not thread.is_alive()
    assert sensor.closed


def test_thread_survives_an_unexpected_step_error(spool: Spool) -> None:
    sampler, _ = _sampler([], spool, FakeClock())
    calls = threading.Semaphore(0)

    def step() -> float:
        calls.release()
        raise RuntimeError("boom")

    sampler.step = step  # type: ignore[method-assign]
    thread = SamplerThread(sampler)
    thread.start()
    assert calls.acquire(timeout=5)
    assert calls.acquire(timeout=5)  # called again after ERROR_WAIT_S: the loop kept running
    thread.stop()
    thread.join(2)
    assert not thread.is_alive()


def test_build_sampler_uses_settings(spool: Spool, clock: FakeClock) -> None:
    settings = Settings.model_validate(
        {"device": {"id": "edge-7"}, "sensors": [{"type": "simulated", "seed": 3}]}
    )
    sampler = build_sampler(settings, spool, Counters(), clock, FakeClockSync(True))
    sampler.step()
    rows = spool.rows_after(0, 10)
    assert [(r.device, r.sensor, r.metric) for r in rows] == [
        ("edge-7", "simulated", "temperature"),
        ("edge-7", "simulated", "humidity"),
    ]


def _syncs(tmp_path: Path, rounds: int) -> int:
    """fsync+fdatasync calls of a child running ``rounds`` sampler rounds (synchronous=FULL)."""
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / f"strace-{rounds}.txt"
    child = [sys.executable, str(root / "bench" / "sampler_fsync.py"), "--child", "sampler"]
    child += ["--rounds", str(rounds), "--sensors", "3", "--db", str(tmp_path / f"{rounds}.db")]
    strace = ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(out)]
    subprocess.run(strace + child, check=True, capture_output=True, timeout=60)
    total = 0
    for line in out.read_text().splitlines():
        fields = line.split()
        if fields and fields[-1] in ("fsync", "fdatasync"):
            total += int(fields[3])
    return total


def test_each_round_costs_exactly_one_sync(tmp_path: Path) -> None:
    """strace: 40 more rounds (6 readings each) cost exactly 40 more fsync/fdatasync calls."""
    assert _syncs(tmp_path, 60) - _syncs(tmp_path, 20) == 40
