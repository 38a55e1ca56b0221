"""Who owns a failure: the sampler passes corruption up, health sees refused rounds,
a failed start releases what it took, and the spool's full/gone state is one per spool."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fakes.clock import FakeClock, FakeClockSync

from mqttspool.config import SpoolConfig, load_config
from mqttspool.counters import Counters
from mqttspool.errors import SpoolCorruptError, SpoolFullError, SpoolGoneError
from mqttspool.reading import Reading
from mqttspool.sampler import Sampler, SamplerThread
from mqttspool.sensor_config import SimulatedConfig
from mqttspool.sensors.base import BaseSensor, Measurement
from mqttspool.service import Service
from mqttspool.spool import AppendResult, Spool, open_spool
from mqttspool.timekeeping import SystemClock


class OneValue(BaseSensor):
    def read(self) -> list[Measurement]:
        return [Measurement("value", 1.0, "u")]


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = open_spool(SpoolConfig(path=str(tmp_path / "spool.db"), min_free_bytes=0), FakeClock())
    yield s
    s.close()


def test_corruption_found_while_re_timing_rows_reaches_the_service(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def corrupt(*_: Any) -> int:
        raise SpoolCorruptError(spool.path, "database disk image is malformed")

    monkeypatch.setattr(spool, "correct_clock", corrupt)
    clock = FakeClock()
    sampler = Sampler([OneValue("s", 1)], "d", spool, Counters(), clock, FakeClockSync(True))
    with pytest.raises(SpoolCorruptError, match="malformed"):
        sampler.step()  # the first step sees the clock synced and re-times rows


def test_rounds_the_spool_refused_are_not_finished_rounds(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse = threading.Event()
    refuse.set()
    real_append = spool.append

    def append(readings: Sequence[Reading], clock_stamped: Any = False) -> AppendResult:
        if refuse.is_set():
            raise SpoolFullError(spool.path, "disk full", dropped=len(readings))
        return real_append(readings, clock_stamped)

    monkeypatch.setattr(spool, "append", append)
    clock = SystemClock()  # the sensor is due every round
    sampler = Sampler([OneValue("s", 0.01)], "d", spool, Counters(), clock, FakeClockSync())
    rounds = threading.Semaphore(0)
    real_step = sampler.step

    def step() -> float:
        try:
            return real_step()
        finally:
            rounds.release()

    sampler.step = step  # type: ignore[method-assign]
    thread = SamplerThread(sampler)
    thread.start()
    started = thread.last_round_mono
    try:
        for _ in range(3):
            assert rounds.acquire(timeout=5)
        assert rounds.acquire(timeout=5)  # the round after the third has begun: 3 done
        assert thread.last_round_mono == started  # nothing stored: health goes red
        refuse.clear()
        deadline = time.monotonic() + 5
        while thread.last_round_mono == started and time.monotonic() < deadline:
            assert rounds.acquire(timeout=5)
        assert thread.last_round_mono > started  # stored again: a finished round
    finally:
        thread.stop()
        thread.join(5)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("failing", ["_start_metrics", "_start_components"])
def test_a_failed_start_closes_the_spool_and_stops_the_metrics_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    cfg = load_config(None, environ={})
    cfg.spool.path = str(tmp_path / "spool.db")
    cfg.broker.host, cfg.broker.port = "127.0.0.1", _unused_port()
    cfg.sensors = [SimulatedConfig(name="sim", interval=60)]
    stopped: list[str] = []

    class Metrics:
        def stop(self) -> None:
            stopped.append("metrics")

    def start_metrics(self: Service) -> None:
        self._metrics = Metrics()
        if failing == "_start_metrics":
            raise OSError("metrics.port: cannot listen")

    def start_components(self: Service) -> None:
        raise OSError("sensors[0]: broken")

    monkeypatch.setattr(Service, "_start_metrics", start_metrics)
    if failing == "_start_components":
        monkeypatch.setattr(Service, "_start_components", start_components)
    service = Service(cfg)
    with pytest.raises(OSError, match=r"cannot listen|broken"):
        service.run()
    assert stopped == ["metrics"]
    assert service.spool is not None and service.spool.db.is_closed()
    assert [t.name for t in threading.enumerate() if t.name.startswith("mqttspool-")] == []


def test_leaving_the_full_state_cannot_undo_a_concurrent_enospc(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bridge sees space come back while the sampler hits ENOSPC: the spool stays full."""
    inside, enospc_done = threading.Event(), threading.Event()
    real_ensure = spool.reserve.ensure

    def slow_ensure() -> bool:
        ok = real_ensure()
        inside.set()
        enospc_done.wait(0.5)  # with the lock the ENOSPC waits for us instead
        return ok

    monkeypatch.setattr(spool.reserve, "ensure", slow_ensure)
    spool.disk.enter_full()  # as after an ENOSPC, then the bridge sees space back

    def enospc() -> None:
        inside.wait(5)
        spool.disk.enter_full()
        enospc_done.set()

    other = threading.Thread(target=enospc)
    other.start()
    spool.disk.space_is_back()
    other.join(5)
    assert spool.disk.full  # the later ENOSPC wins: headroom stays for deletes


def test_every_thread_sees_the_one_gone_error(spool: Spool) -> None:
    assert spool.depth() == 0  # this thread holds the file open, as a running daemon does
    spool.path.unlink()
    with pytest.raises(SpoolGoneError) as first:
        spool.check_file()
    errors: list[SpoolGoneError] = []

    def check() -> None:
        try:
            spool.check_file()
        except SpoolGoneError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=check) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(errors) == 4 and {id(e) for e in errors} == {id(first.value)}
