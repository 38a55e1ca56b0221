"""The supervisor: a component stopped by a spool error (e.g. the file is gone) fails loudly."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from mqttspool import service as service_module
from mqttspool.bridge import Bridge
from mqttspool.config import load_config
from mqttspool.errors import SpoolError
from mqttspool.health import check_health, heartbeat_path, read_heartbeat
from mqttspool.sensor_config import SimulatedConfig
from mqttspool.service import Service
from mqttspool.spool import identity as identity_module


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StandInSpoolGoneError(SpoolError):
    """Stands in for the spool layer's "file deleted or replaced" error."""


def test_a_spool_error_in_a_component_stops_run_with_exit_1_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(None, environ={})
    cfg.spool.path = str(tmp_path / "spool.db")
    cfg.broker.host, cfg.broker.port = "127.0.0.1", unused_port()
    cfg.sensors = [SimulatedConfig(name="sim", interval=0.05)]
    steps = {"n": 0}
    real_step = Bridge.step

    def failing_step(self: Bridge, now: float) -> float:
        steps["n"] += 1
        if steps["n"] == 3:
            raise StandInSpoolGoneError(self.spool.path, "was deleted or replaced while in use")
        return real_step(self, now)

    monkeypatch.setattr(Bridge, "step", failing_step)
    monkeypatch.setattr(service_module, "HEARTBEAT_S", 3600.0)  # woken by the failure itself
    service = Service(cfg)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(service.run()))
    with caplog.at_level(logging.ERROR, logger="mqttspool.service"):
        runner.start()
        runner.join(20)
    assert not runner.is_alive()
    assert codes == [1]
    assert [r.getMessage() for r in caplog.records if r.name == "mqttspool.service"] == [
        f"spool {cfg.spool.path} can no longer be used (spool {cfg.spool.path}: was deleted"
        " or replaced while in use); stopping with exit 1"
    ]
    assert read_heartbeat(heartbeat_path(cfg.spool.path)).state == "failed"
    assert check_health(cfg.spool.path).reason.startswith("daemon is failed (since ")


def test_an_idle_supervisor_does_not_poll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(None, environ={})
    cfg.spool.path = str(tmp_path / "spool.db")
    cfg.broker.host, cfg.broker.port = "127.0.0.1", unused_port()
    monkeypatch.setattr(service_module, "HEARTBEAT_S", 3600.0)
    checks = {"n": 0}
    real_check = Service._component_error

    def counting_check(self: Service) -> BaseException | None:
        checks["n"] += 1
        return real_check(self)

    monkeypatch.setattr(Service, "_component_error", counting_check)
    service = Service(cfg)
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        runner.join(1.0)  # an idle second: no heartbeat due, no component ended
        assert checks["n"] == 0
    finally:
        service.request_stop()
        runner.join(30)
    assert not runner.is_alive()


def test_a_spool_file_deleted_under_run_stops_it_with_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A spool deleted under the daemon: the real spool notices it, the service stops."""
    monkeypatch.setattr(identity_module, "FILE_CHECK_S", 0.05)
    cfg = load_config(None, environ={})
    cfg.spool.path = str(tmp_path / "spool.db")
    cfg.broker.host, cfg.broker.port = "127.0.0.1", unused_port()  # nobody listens: rows stay
    cfg.sensors = [SimulatedConfig(name="sim", interval=0.05)]
    service = Service(cfg)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(service.run()))
    with caplog.at_level(logging.ERROR, logger="mqttspool"):
        runner.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (service.spool is None or service.spool.depth() < 4):
            time.sleep(0.02)
        Path(cfg.spool.path).unlink()
        runner.join(20)
    assert not runner.is_alive()
    assert codes == [1]
    fatal = [r.getMessage() for r in caplog.records if r.name == "mqttspool.service"]
    assert len(fatal) == 1 and fatal[0].startswith(f"spool {cfg.spool.path} can no longer be used")
    assert "was deleted while open" in fatal[0] and "queued reading(s)" in fatal[0]
