"""The heartbeat lives in ``<spool>.health``, outside the spool, and ``health`` judges it."""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import Daemon, mqttspool_env, run_cli, wait_until
from support.tmpfs import small_tmpfs

from mqttspool import service as service_module
from mqttspool.config import Settings, load_config
from mqttspool.health import check_health, heartbeat_path, read_heartbeat
from mqttspool.sensor_config import SimulatedConfig
from mqttspool.service import Service


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def idle_settings(tmp_path: Path) -> Settings:
    cfg = load_config(None, environ={})
    cfg.spool.path = str(tmp_path / "spool.db")
    cfg.broker.host, cfg.broker.port = "127.0.0.1", unused_port()  # no broker: spool only
    cfg.sensors = [SimulatedConfig(name="sim", interval=3600)]
    return cfg


@pytest.fixture
def running_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    """An in-process ``run`` with a 50 ms heartbeat, idle after its first sampling round."""
    monkeypatch.setattr(service_module, "HEARTBEAT_S", 0.05)
    service = Service(idle_settings(tmp_path))
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(service.run()))
    runner.start()
    try:
        yield service
    finally:
        service.request_stop()
        runner.join(30)
    assert codes == [0]


def _files(spool: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of the spool and its WAL."""
    out = {}
    for path in (spool, Path(f"{spool}-wal")):
        st = path.stat()
        out[path.name] = (st.st_size, st.st_mtime_ns)
    return out


def test_idle_heartbeats_do_not_write_the_spool(running_service: Service) -> None:
    spool = Path(running_service.settings.spool.path)
    beat_file = heartbeat_path(spool)
    wait_until(
        lambda: (
            running_service.sampler_thread is not None
            and running_service.sampler_thread.sampler.rounds >= 1
        ),
        10,
        "the first sampling round",
    )
    wait_until(beat_file.exists, 10, "the first heartbeat")
    before = _files(spool)
    seen: set[int] = set()

    def beats_seen() -> bool:
        seen.add(read_heartbeat(beat_file).wall_us)
        return len(seen) >= 4

    wait_until(beats_seen, 10, "three more heartbeats")
    assert _files(spool) == before
    assert read_heartbeat(beat_file).state == "running"


@pytest.mark.integration
def test_health_is_0_while_run_runs_and_1_after_sigterm(tmp_path: Path) -> None:
    env = mqttspool_env(tmp_path / "spool.db", unused_port())
    never = run_cli(["health"], env)
    assert never.returncode == 1
    assert never.stdout == (
        f"unhealthy: no heartbeat: no daemon has run with spool {tmp_path / 'spool.db'}"
        f" ({tmp_path / 'spool.db'}.health)\n"
    )
    daemon = Daemon(env)
    try:
        wait_until(lambda: run_cli(["health"], env).returncode == 0, 20, "health 0")
        assert run_cli(["health"], env).stdout.startswith("healthy: running, heartbeat ")
        daemon.terminate()
        assert daemon.wait(20) == 0
    finally:
        daemon.stop()
    after = run_cli(["health"], env)
    assert after.returncode == 1
    assert after.stdout.startswith("unhealthy: daemon is stopped (since ")


class _FakeGate:
    """The consumer gate as the heartbeat sees it: nothing held back."""

    paused: str | None = None


class _FakeBridge:
    """Only what the heartbeat asks a bridge: when its oldest unacknowledged message went out."""

    connected = False

    def __init__(self, since: float | None) -> None:
        self.since = since
        self.gate = _FakeGate()

    def unacked_since(self) -> float | None:
        return self.since


def test_unacked_for_is_the_age_of_the_oldest_unacknowledged_message() -> None:
    assert service_module.unacked_for(_FakeBridge(None), 100.0) is None  # type: ignore[arg-type]
    assert service_module.unacked_for(_FakeBridge(40.0), 100.0) == 60.0  # type: ignore[arg-type]
    assert service_module.unacked_for(None, 100.0) is None


def test_heartbeat_carries_the_bridge_window_age_and_its_limit(
    running_service: Service,
) -> None:
    beat_file = heartbeat_path(running_service.settings.spool.path)
    wait_until(lambda: running_service.bridge is not None, 10, "the bridge")
    running_service.bridge = _FakeBridge(0.0)  # type: ignore[assignment]
    wait_until(
        lambda: beat_file.exists() and read_heartbeat(beat_file).unacked_for_s is not None,
        10,
        "a heartbeat with it",
    )
    beat = read_heartbeat(beat_file)
    assert beat.unacked_for_s is not None and beat.unacked_for_s > 0
    assert beat.unacked_limit_s == 3 * running_service.settings.bridge.ack_timeout


@pytest.mark.integration
def test_sighup_stops_the_daemon_gracefully(tmp_path: Path) -> None:
    env = mqttspool_env(tmp_path / "spool.db", unused_port())
    daemon = Daemon(env)
    try:
        wait_until(lambda: run_cli(["health"], env).returncode == 0, 20, "health 0")
        daemon.proc.send_signal(signal.SIGHUP)
        assert daemon.wait(20) == 0  # not 129
        daemon.wait_log(r"received SIGHUP: shutting down", 1)
        daemon.wait_log(r"stopped cleanly", 1)
    finally:
        daemon.stop()
    after = run_cli(["health"], env)
    assert (after.returncode, after.stdout[:28]) == (1, "unhealthy: daemon is stopped")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root, as the spool's disk-full tests do)."""
    with small_tmpfs(tmp_path / "small", "1m"):
        yield tmp_path / "small"


def _fill(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_health_keeps_working_while_the_disk_is_full(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "HEARTBEAT_S", 0.05)
    cfg = idle_settings(small_disk)
    cfg.sensors = [SimulatedConfig(name="sim", interval=0.05)]
    spool = cfg.spool.path
    service = Service(cfg)
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        wait_until(lambda: check_health(spool).ok, 10, "health 0")
        _fill(small_disk)
        filled_us = time.time_ns() // 1000
        wait_until(
            lambda: read_heartbeat(heartbeat_path(spool)).wall_us > filled_us,
            10,
            "a heartbeat written on the full disk",
        )
        assert check_health(spool).ok
    finally:
        service.request_stop()
        runner.join(30)
    assert check_health(spool).reason.startswith("daemon is stopped (since ")
    (small_disk / "filler").unlink()
