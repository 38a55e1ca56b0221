"""DS18B20, CPU temperature and system metrics against fake sysfs/proc trees in tmp dirs."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mqttspool.errors import SensorError
from mqttspool.sensors.base import Measurement
from mqttspool.sensors.cpu_temp import CpuTempSensor
from mqttspool.sensors.ds18b20 import Ds18b20Sensor
from mqttspool.sensors.system import SystemSensor

DEV = "28-000005e2fdc3"
GOOD = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
CLONE = "8f 01 55 00 7f ff 0c 10 a0 : crc=a0 YES\n8f 01 55 00 7f ff 0c 10 a0 t=24937\n"
POWER_ON = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n"
CRC_NO = "ff ff ff ff ff ff ff ff ff : crc=c9 NO\n72 01 4b 46 7f ff 0e 10 57 t=-62\n"
ZEROS = "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n"


@pytest.fixture
def w1(tmp_path: Path) -> Path:
    """``/sys/bus/w1/devices`` with one sensor, the bus master and a ghost ``00-`` entry."""
    root = tmp_path / "devices"
    (root / DEV).mkdir(parents=True)
    (root / DEV / "w1_slave").write_text(GOOD)
    (root / "w1_bus_master1").mkdir()
    (root / "00-800000000000").mkdir()
    return root


def test_ds18b20_by_device_id(w1: Path) -> None:
    sensor = Ds18b20Sensor("probe", 10, device_id=DEV, devices_dir=str(w1))
    assert sensor.read() == [Measurement("temperature", 23.125, "°C")]


def test_ds18b20_autodetect_ignores_ghosts_and_bus_master(w1: Path) -> None:
    sensor = Ds18b20Sensor("probe", 10, devices_dir=str(w1))
    assert sensor.resolve() == w1 / DEV / "w1_slave"


def test_ds18b20_by_path_uses_exact_bytes(w1: Path) -> None:
    path = w1 / DEV / "w1_slave"
    path.write_text(CLONE)
    sensor = Ds18b20Sensor("probe", 10, path=str(path))
    assert sensor.read() == [Measurement("temperature", 24.9375, "°C")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (POWER_ON, "85 °C power-on value"),
        (CRC_NO, "CRC error reported by the kernel"),
        (ZEROS, "invalid scratchpad"),
        ("", "empty read"),
    ],
)
def test_ds18b20_bad_reads(w1: Path, content: str, message: str) -> None:
    (w1 / DEV / "w1_slave").write_text(content)
    sensor = Ds18b20Sensor("probe", 10, device_id=DEV, devices_dir=str(w1))
    with pytest.raises(SensorError, match=message) as info:
        sensor.read()
    assert info.value.sensor == "probe"


def test_ds18b20_missing_device(w1: Path) -> None:
    sensor = Ds18b20Sensor("probe", 10, device_id="28-0000000000aa", devices_dir=str(w1))
    with pytest.raises(SensorError, match=r"not present: .*28-0000000000aa/w1_slave") as info:
        sensor.read()
    assert info.value.errno == errno.ENOENT


def test_ds18b20_none_or_several(tmp_path: Path, w1: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SensorError, match="no DS18B20"):
        Ds18b20Sensor("probe", 10, devices_dir=str(empty)).read()
    (w1 / "28-0000000000bb").mkdir()
    with pytest.raises(SensorError, match="several DS18B20 found"):
        Ds18b20Sensor("probe", 10, devices_dir=str(w1)).read()


def test_ds18b20_recovers(w1: Path) -> None:
    path = w1 / DEV / "w1_slave"
    sensor = Ds18b20Sensor("probe", 10, path=str(path))
    path.write_text(POWER_ON)
    with pytest.raises(SensorError):
        sensor.read()
    path.write_text(GOOD)
    assert sensor.read()[0].value == 23.125


def _zone(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "thermal_zone0" / "temp"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def test_cpu_temp_millidegrees(tmp_path: Path) -> None:
    sensor = CpuTempSensor("cpu", 30, str(_zone(tmp_path, "48312\n")))
    assert sensor.read() == [Measurement("temperature", 48.312, "°C")]


def test_cpu_temp_negative(tmp_path: Path) -> None:
    sensor = CpuTempSensor("cpu", 30, str(_zone(tmp_path, "-1500\n")))
    assert sensor.read() == [Measurement("temperature", -1.5, "°C")]


@pytest.mark.parametrize(
    ("content", "message"), [("200000\n", "implausible temperature"), ("oops\n", "not a number")]
)
def test_cpu_temp_rejects(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(SensorError, match=message):
        CpuTempSensor("cpu", 30, str(_zone(tmp_path, content))).read()


def test_cpu_temp_missing(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match=r"does not exist .*not a Raspberry Pi") as info:
        CpuTempSensor("cpu", 30, str(tmp_path / "nope" / "temp")).read()
    assert info.value.sensor == "cpu"


def test_system_metrics_from_fake_proc(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "loadavg").write_text("0.42 0.30 0.10 1/123 4567\n")
    (proc / "uptime").write_text("12345.67 4321.00\n")
    (proc / "meminfo").write_text("MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 512 kB\n")
    st = os.statvfs(tmp_path)
    sensor = SystemSensor("sys", 60, disk_path=str(tmp_path), proc=str(proc))
    values = {m.metric: (m.value, m.unit) for m in sensor.read()}
    assert values["load1"] == (0.42, None)
    assert values["uptime"] == (12345.67, "s")
    assert values["mem_available"] == (512 * 1024.0, "B")
    # Free space moves as other processes write; a 64 MiB window is plenty for one test.
    assert values["disk_free"][1] == "B"
    assert abs(values["disk_free"][0] - st.f_bavail * st.f_frsize) <= 64 * 1024 * 1024


def test_system_missing_proc(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match=r"cannot read .*loadavg"):
        SystemSensor("sys", 60, proc=str(tmp_path / "none")).read()
