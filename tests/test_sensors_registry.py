"""Driver option validation (field paths in errors) and building sensors from config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mqttspool.config import SensorConfig
from mqttspool.errors import ConfigError
from mqttspool.sensors.ads1115 import Ads1115Sensor
from mqttspool.sensors.bme280 import Bme280Sensor
from mqttspool.sensors.cpu_temp import CpuTempSensor
from mqttspool.sensors.ds18b20 import Ds18b20Sensor
from mqttspool.sensors.registry import (
    Ads1115Options,
    BoschOptions,
    build_sensors,
    validate_all,
    validate_options,
)
from mqttspool.sensors.simulated import SimulatedSensor
from mqttspool.sensors.system import SystemSensor


def _cfg(**kw: Any) -> SensorConfig:
    return SensorConfig.model_validate(kw)


def test_defaults() -> None:
    opts = validate_options(_cfg(type="bme280"))
    assert isinstance(opts, BoschOptions)
    assert (opts.bus, opts.address, opts.oversampling) == (1, 0x76, 1)


def test_hex_string_address() -> None:
    opts = validate_options(_cfg(type="bme280", address="0x77"))
    assert isinstance(opts, BoschOptions)
    assert opts.address == 0x77


@pytest.mark.parametrize(
    ("entry", "index", "path", "message"),
    [
        ({"type": "bme280", "address": 0x44}, 0, "sensors[0].address", "(got 0x44)"),
        ({"type": "sht3x", "adress": 0x44}, 2, "sensors[2].adress", "unknown option"),
        ({"type": "ds18b20", "device_id": "10-abc"}, 1, "sensors[1].device_id", "pattern"),
        ({"type": "ads1115"}, 0, "sensors[0].channels", "required"),
        (
            {"type": "ads1115", "channels": [{"channel": 0}, {"channel": 5}]},
            3,
            "sensors[3].channels[1].channel",
            "less than or equal to 3",
        ),
        (
            {"type": "ads1115", "channels": [{"channel": 0, "pga": 3.3}]},
            0,
            "sensors[0].channels[0].pga",
            "must be one of",
        ),
        ({"type": "bh1750", "mtreg": 300}, 0, "sensors[0].mtreg", "less than or equal"),
        ({"type": "cpu_temp", "bus": 1}, 0, "sensors[0].bus", "unknown option"),
    ],
)
def test_errors_name_the_field(entry: dict[str, Any], index: int, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_options(_cfg(**entry), index)
    (got_path, got_message), *_ = info.value.problems
    assert got_path == path
    assert message in got_message


def test_validate_all_collects_every_problem() -> None:
    configs = [_cfg(type="bme280", address=1), _cfg(type="simulated"), _cfg(type="sht4x", x=1)]
    with pytest.raises(ConfigError) as info:
        validate_all(configs)
    assert [p for p, _ in info.value.problems] == ["sensors[0].address", "sensors[2].x"]


def test_duplicate_ads_metrics() -> None:
    with pytest.raises(ConfigError, match="used by two channels"):
        validate_options(
            _cfg(type="ads1115", channels=[{"channel": 0}, {"channel": 1, "metric": "ain0"}])
        )


def test_ads_channel_defaults() -> None:
    opts = validate_options(_cfg(type="ads1115", channels=[{"channel": 2}]))
    assert isinstance(opts, Ads1115Options)
    ch = opts.channels[0]
    assert (ch.metric, ch.unit, ch.pga, ch.data_rate, ch.scale, ch.offset) == (
        "ain2",
        "V",
        4.096,
        128,
        1.0,
        0.0,
    )


def test_build_sensors_types_and_names(tmp_path: Path) -> None:
    configs = [
        _cfg(type="bme280", name="outdoor", interval=30),
        _cfg(type="bmp280", address=0x77),
        _cfg(type="ads1115", channels=[{"channel": 0, "metric": "soil", "scale": 2.0}]),
        _cfg(type="ds18b20", device_id="28-000005e2fdc3"),
        _cfg(type="cpu_temp", path=str(tmp_path / "temp")),
        _cfg(type="system"),
        _cfg(type="simulated", seed=7),
    ]
    opened: list[int] = []

    def factory(bus: int) -> Any:
        opened.append(bus)
        raise AssertionError("buses are opened lazily, not at build time")

    sensors = build_sensors(configs, bus_factory=factory, spool_dir=str(tmp_path))
    assert [type(s) for s in sensors] == [
        Bme280Sensor,
        Bme280Sensor,
        Ads1115Sensor,
        Ds18b20Sensor,
        CpuTempSensor,
        SystemSensor,
        SimulatedSensor,
    ]
    assert [(s.name, s.interval) for s in sensors][:2] == [("outdoor", 30), ("bmp280", 10)]
    bmp = sensors[1]
    assert isinstance(bmp, Bme280Sensor) and not bmp.humidity and bmp.device.address == 0x77
    system = sensors[5]
    assert isinstance(system, SystemSensor) and system.disk_path == str(tmp_path)
    ds = sensors[3]
    assert isinstance(ds, Ds18b20Sensor)
    assert ds.path == Path("/sys/bus/w1/devices/28-000005e2fdc3/w1_slave")
    assert opened == []


def test_simulated_is_deterministic() -> None:
    a = build_sensors([_cfg(type="simulated", seed=5)])[0]
    b = build_sensors([_cfg(type="simulated", seed=5)])[0]
    c = build_sensors([_cfg(type="simulated", seed=6)])[0]
    series_a = [a.read() for _ in range(5)]
    assert series_a == [b.read() for _ in range(5)]
    assert series_a != [c.read() for _ in range(5)]
    assert [m.metric for m in series_a[0]] == ["temperature", "humidity"]
    assert all(15 < ms[0].value < 27 and 0 <= ms[1].value <= 100 for ms in series_a)
