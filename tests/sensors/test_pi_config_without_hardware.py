"""`mqttspool run -c config/pi.toml` on a machine without the hardware (this one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.broker import MosquittoBroker
from support.daemon import Daemon, mqttspool_env
from support.recorder import RecorderFactory

PI_TOML = Path(__file__).parents[2] / "config" / "pi.toml"

pytestmark = pytest.mark.integration


def test_missing_sensors_are_reported_once_each_and_the_rest_keeps_running(
    tmp_path: Path, broker: MosquittoBroker, recorder_factory: RecorderFactory
) -> None:
    recorder = recorder_factory(broker)
    env = mqttspool_env(
        tmp_path / "spool.db",
        broker.port,
        device__id="greenhouse-pi",
        broker__username="",
        broker__password_file="",
        broker__tls__enabled="false",
    )
    env["MQTTSPOOL_CONFIG"] = str(PI_TOML)
    env["MQTTSPOOL_SPOOL__MAX_AGE"] = "0"
    assert not Path("/dev/i2c-1").exists(), "this test expects a machine without I2C"
    daemon = Daemon(env)
    try:
        daemon.wait_log(r"connected to broker", timeout=20)
        recorder.wait_for(
            lambda msgs: any((d := m.data()) is not None and d["sensor"] == "system" for m in msgs),
            timeout=20,
        )
        climate = daemon.wait_log(r"sensor climate: ", timeout=10)
        soil = daemon.wait_log(r"sensor soil_temp: ", timeout=10)
        daemon.terminate()
        assert daemon.wait(20) == 0
    finally:
        daemon.stop()
    assert len(climate) == 1 and "/dev/i2c-1" in climate[0]
    assert len(soil) == 1 and "28-000005e2fdc3" in soil[0]
    metrics = {d["metric"] for d in recorder.data() if d["sensor"] == "system"}
    assert {"load1", "mem_available", "disk_free", "uptime"} <= metrics
    assert {d["device"] for d in recorder.data()} == {"greenhouse-pi"}
