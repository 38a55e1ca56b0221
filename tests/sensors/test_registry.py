"""Driver option models (typed, checked at load time) and building sensors from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mqttspool.config import load_config
from mqttspool.errors import ConfigError
from mqttspool.sensor_config import (
    SENSOR_TYPES,
    Ads1115Config,
    BoschConfig,
    SensorConfig,
    sensor_config,
)
from mqttspool.sensors.ads1115 import Ads1115Sensor
from mqttspool.sensors.bme280 import Bme280Sensor
from mqttspool.sensors.cpu_temp import CpuTempSensor
from mqttspool.sensors.ds18b20 import Ds18b20Sensor
from mqttspool.sensors.registry import BUILDERS, build_sensors
from mqttspool.sensors.simulated import SimulatedSensor
from mqttspool.sensors.system import SystemSensor


def _cfg(**kw: Any) -> SensorConfig:
    return sensor_config(kw)


def _load_problems(tmp_path: Path, *entries: dict[str, Any]) -> list[tuple[str, str]]:
    """Load a config holding ``entries`` as [[sensors]]; the problems it raises."""
    doc = "".join("[[sensors]]\n" + _toml_entry(entry) for entry in entries)
    path = tmp_path / "c.toml"
    path.write_text(doc, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    return info.value.problems


def _toml_entry(entry: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return f'"{v}"' if isinstance(v, str) else repr(v)

    return "".join(f"{k} = {value(v)}\n" for k, v in entry.items())


def test_defaults() -> None:
    opts = _cfg(type="bme280")
    assert isinstance(opts, BoschConfig)
    assert (opts.name, opts.interval, opts.bus, opts.address, opts.oversampling) == (
        "bme280",
        10,
        1,
        0x76,
        1,
    )


@pytest.mark.parametrize(("bus", "address"), [("1", "0x77"), (" 0x1 ", " 0x77"), (1, "119")])
def test_integers_may_be_written_as_text(bus: Any, address: Any) -> None:
    opts = _cfg(type="bme280", bus=bus, address=address)
    assert isinstance(opts, BoschConfig)
    assert (opts.bus, opts.address) == (1, 0x77)


def test_every_type_has_a_model_and_a_builder() -> None:
    assert set(SENSOR_TYPES) == {
        "bme280",
        "bmp280",
        "sht3x",
        "sht4x",
        "htu21d",
        "bh1750",
        "ads1115",
        "ds18b20",
        "cpu_temp",
        "system",
        "simulated",
    }
    built = {type(_cfg(type=t, channels=[{"channel": 0}])) for t in SENSOR_TYPES if t == "ads1115"}
    built |= {type(_cfg(type=t)) for t in SENSOR_TYPES if t != "ads1115"}
    assert built == set(BUILDERS)


@pytest.mark.parametrize(
    ("entry", "index", "path", "message"),
    [
        ({"type": "bme280", "address": 0x44}, 0, "address", "must be one of 0x76, 0x77 (got 0x44)"),
        ({"type": "bme280", "address": "0x4z"}, 0, "address", 'as an integer (got "0x4z")'),
        ({"type": "bme280", "bus": -1}, 0, "bus", "greater than or equal to 0 (got -1)"),
        ({"type": "sht3x", "adress": 0x44}, 2, "adress", "unknown option for this sensor type"),
        ({"type": "ds18b20", "device_id": "10-abc"}, 1, "device_id", "pattern"),
        ({"type": "ds18b20", "device_id": "28-000005e2fdc3", "path": "/x"}, 0, "", "not both"),
        ({"type": "ads1115"}, 0, "channels", "field required"),
        (
            {"type": "ads1115", "channels": [{"channel": 0}, {"channel": 5}]},
            3,
            "channels.1.channel",
            "less than or equal to 3 (got 5)",
        ),
        (
            {"type": "ads1115", "channels": [{"channel": 0, "pga": 3.3}]},
            0,
            "channels.0.pga",
            "must be one of",
        ),
        (
            {"type": "ads1115", "channels": [{"channel": 0, "scale": "inf"}]},
            0,
            "channels.0.scale",
            "finite number",
        ),
        (
            {"type": "ads1115", "channels": [{"channel": 0}, {"channel": 1, "metric": "ain0"}]},
            0,
            "",
            "metric 'ain0' is used by two channels",
        ),
        ({"type": "bh1750", "mtreg": 300}, 0, "mtreg", "less than or equal to 254 (got 300)"),
        ({"type": "cpu_temp", "bus": 1}, 0, "bus", "unknown option for this sensor type"),
        ({"type": "simulated", "interval": "nan"}, 0, "interval", "finite number"),
        ({"type": "simulated", "seed": "x"}, 0, "seed", 'as an integer (got "x")'),
    ],
)
def test_errors_name_the_sensor_and_the_field(
    tmp_path: Path, entry: dict[str, Any], index: int, path: str, message: str
) -> None:
    entries = [{"type": "simulated", "name": f"s{i}"} for i in range(index)] + [entry]
    name = entry["type"]
    where = f'sensors.{index} (name "{name}")' + (f": {path}" if path else "")
    (got_path, got_message), *_ = _load_problems(tmp_path, *entries)
    assert got_path == where
    assert message in got_message


def test_every_problem_of_every_sensor_is_reported(tmp_path: Path) -> None:
    problems = _load_problems(
        tmp_path,
        {"type": "bme280", "name": "bme", "address": 1},
        {"type": "simulated"},
        {"type": "sht4x", "x": 1},
    )
    assert [p for p, _ in problems] == [
        'sensors.0 (name "bme"): address',
        'sensors.2 (name "sht4x"): x',
    ]


@pytest.mark.parametrize(
    ("entry", "where", "message"),
    [
        (
            {"type": "bogus"},
            'sensors.0 (name "bogus"): type',
            "must be one of bme280, bmp280, sht3x, sht4x, htu21d, bh1750, ads1115, ds18b20, "
            'cpu_temp, system, simulated (got "bogus")',
        ),
        ({"name": "x"}, 'sensors.0 (name "x"): type', "field required"),
        ({"type": 5}, "sensors.0: type", "must be one of bme280, bmp280, sht3x"),
    ],
)
def test_missing_or_unknown_type(
    tmp_path: Path, entry: dict[str, Any], where: str, message: str
) -> None:
    [(got_where, got_message)] = _load_problems(tmp_path, entry)
    assert got_where == where
    assert message in got_message


def test_ads_channel_defaults() -> None:
    opts = _cfg(type="ads1115", channels=[{"channel": 2}])
    assert isinstance(opts, Ads1115Config)
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
