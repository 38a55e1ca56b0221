"""``health`` sees a hung sampler: a sensor read that never returns makes it exit 1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import wait_until

from mqttspool import health as health_module
from mqttspool import service as service_module
from mqttspool.cli import main
from mqttspool.config import Settings, load_config
from mqttspool.counters import Counters
from mqttspool.health import check_health
from mqttspool.sampler import Sampler
from mqttspool.sensors.base import BaseSensor, Measurement
from mqttspool.service import Service
from mqttspool.spool import Spool
from mqttspool.timekeeping import Clock, SystemClockSync

INTERVAL_S = 0.05


class HangingSensor(BaseSensor):
    """A simulated-like sensor whose reads block while ``hang`` is set (a stuck bus driver)."""

    def __init__(self) -> None:
        super().__init__("hanging", INTERVAL_S)
        self.hang = threading.Event()
        self.release = threading.Event()
        self.reads = 0

    def read(self) -> list[Measurement]:
        self.reads += 1
        if self.hang.is_set():
            self.release.wait(30)
        return [Measurement("temperature", 21.0, "°C")]


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingSensor]:
    """``run`` in-process with a :class:`HangingSensor`, 50 ms heartbeats, 0.3 s sampler limit."""
    sensor = HangingSensor()

    def build(settings: Settings, spool: Spool, counters: Counters, clock: Clock) -> Sampler:
        return Sampler([sensor], settings.device.id, spool, counters, clock, SystemClockSync())

    monkeypatch.setattr(service_module, "build_sampler", build)
    monkeypatch.setattr(service_module, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(health_module, "SAMPLER_STUCK_MIN_S", 0.3)
    cfg = load_config(None, environ={})
    cfg.spool.path = str(tmp_path / "spool.db")
    cfg.broker.host, cfg.broker.port = "127.0.0.1", unused_port()  # no broker: spool only
    monkeypatch.setenv("MQTTSPOOL_SPOOL__PATH", cfg.spool.path)
    service = Service(cfg)
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        yield sensor
    finally:
        sensor.release.set()
        service.request_stop()
        runner.join(30)


def test_a_hung_sensor_read_makes_health_exit_1_naming_the_sampler(
    sensor: HangingSensor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = str(tmp_path / "spool.db")
    wait_until(lambda: sensor.reads >= 3 and check_health(spool).ok, 10, "healthy sampling")
    sensor.hang.set()
    wait_until(lambda: not check_health(spool).ok, 10, "health to see the hung sampler")
    capsys.readouterr()
    assert main(["health"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("unhealthy: sampler stuck: no sampling round finished for ")
    assert out.endswith(" s (limit 0.3 s)\n")
    sensor.release.set()  # the read returns: the sampler catches up and health recovers
    wait_until(lambda: check_health(spool).ok, 10, "health after the sensor recovered")
