"""``mqttspool sensors`` on this machine (no I2C, no 1-Wire): clear errors, exit 1."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.smbus import CommandDevice, FakeSMBus

from mqttspool.sensors import cli as sensors_cli
from mqttspool.sensors import i2c
from mqttspool.sensors.base import BaseSensor, Measurement
from mqttspool.sensors.cpu_temp import CpuTempSensor

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path = ROOT, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTTSPOOL_")} | extra_env
    return subprocess.run(
        [sys.executable, "-m", "mqttspool", "sensors", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_pi_example_without_hardware_reports_each_missing_sensor(tmp_path: Path) -> None:
    secret = tmp_path / "broker-password"  # pi.toml's password_file is not on this machine
    secret.write_text("pw\n", encoding="utf-8")
    result = _run("-c", "config/pi.toml", MQTTSPOOL_BROKER__PASSWORD_FILE=str(secret))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    by_name = {line.split()[0] for line in lines if "ERROR" in line}
    assert {"climate", "soil_temp"} <= by_name
    climate = next(line for line in lines if line.startswith("climate"))
    assert "/dev/i2c-1 does not exist: I2C not enabled" in climate
    soil = next(line for line in lines if line.startswith("soil_temp"))
    assert "sensor not present: /sys/bus/w1/devices/28-000005e2fdc3/w1_slave" in soil
    assert "Traceback" not in result.stderr


def test_missing_sensors_fail_but_sysfs_values_are_printed(tmp_path: Path) -> None:
    zone = tmp_path / "thermal_zone0" / "temp"
    zone.parent.mkdir()
    zone.write_text("48312\n")
    config = tmp_path / "pi.toml"
    config.write_text(
        f"""
[device]
id = "test-pi"
[spool]
path = "{tmp_path / "spool.db"}"
[[sensors]]
type = "bme280"
name = "climate"
bus = 1
address = 0x76
[[sensors]]
type = "ds18b20"
name = "soil_temp"
path = "{tmp_path / "w1" / "28-000005e2fdc3" / "w1_slave"}"
[[sensors]]
type = "cpu_temp"
path = "{zone}"
[[sensors]]
type = "system"
"""
    )
    result = _run("-c", str(config))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("climate    ERROR  /dev/i2c-1 does not exist: I2C not enabled")
    assert lines[1].startswith("soil_temp  ERROR  sensor not present: ")
    assert lines[2] == "cpu_temp   temperature    48.312 °C"
    metrics = [line.split()[1] for line in lines[3:7]]
    assert metrics == ["load1", "mem_available", "disk_free", "uptime"]
    assert all(line.startswith("system ") for line in lines[3:7])
    assert lines[7] == "2 of 4 sensor(s) failed"
    assert not (tmp_path / "spool.db").exists()  # reading sensors never touches the spool


def test_bad_option_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[sensors]]\ntype = "bme280"\naddress = 0x50\n')
    result = _run("-c", str(config))
    assert result.returncode == 2
    assert (
        'sensors.0 (name "bme280"): address: must be one of 0x76, 0x77 (got 0x50)' in result.stderr
    )


def test_all_good_exits_zero(tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("40000\n")
    out = io.StringIO()
    sensors: list[BaseSensor] = [CpuTempSensor("cpu", 10, str(zone))]
    assert sensors_cli.read_all(list(sensors), out) == 0
    assert out.getvalue() == "cpu  temperature    40 °C\n"


def test_format_value() -> None:
    assert [sensors_cli.format_value(v) for v in (21.37, 1006.61517, 1024.0, -0.00001)] == [
        "21.37",
        "1006.6152",
        "1024",
        "0",
    ]


def test_scan_prints_known_chips(monkeypatch: pytest.MonkeyPatch) -> None:
    bus = FakeSMBus({0x76: CommandDevice(last_command=b"", script={b"": [b"\x60"]})})
    original = i2c.scan_bus
    monkeypatch.setattr(i2c, "scan_bus", lambda n: original(n, bus.factory))
    out = io.StringIO()
    assert sensors_cli.scan(1, out) == 0
    assert out.getvalue() == "0x76  bme280/bmp280 (SDO to GND)\n"


def test_scan_without_i2c_on_this_machine() -> None:
    result = _run("--scan", "--bus", "7")
    assert result.returncode == 1
    assert "/dev/i2c-7 does not exist: I2C not enabled" in result.stdout


def test_measurement_units_are_printed() -> None:
    class Two(BaseSensor):
        def read(self) -> list[Measurement]:
            return [Measurement("a", 1.5, None), Measurement("b", 2.0, "%")]

    out = io.StringIO()
    assert sensors_cli.read_all([Two("two", 1)], out) == 0
    assert out.getvalue() == "two  a              1.5\ntwo  b              2 %\n"
