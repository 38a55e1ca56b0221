"""Sensor driver options are validated with the rest of the config (exit 2, field paths)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mqttspool.config import effective_config, load_config, to_toml
from mqttspool.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_bad_driver_options_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[sensors]]\ntype = "bme280"\naddress = 0x44\nbogus = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.problems == [
        ('sensors.0 (name "bme280"): address', "must be one of 0x76, 0x77 (got 0x44)"),
        (
            'sensors.0 (name "bme280"): bogus',
            "unknown option for this sensor type (see docs/sensors.md)",
        ),
    ]


def test_check_config_exits_2_on_bad_driver_option(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[sensors]]\ntype = "ds18b20"\nname = "tank"\nbogus = 1\n')
    result = subprocess.run(
        [sys.executable, "-m", "mqttspool", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert 'sensors.0 (name "tank"): bogus: unknown option for this sensor type' in result.stderr


def test_shipped_pi_config_is_valid(tmp_path: Path) -> None:
    secret = tmp_path / "broker-password"
    secret.write_text("pw\n", encoding="utf-8")
    settings = load_config(
        Path(__file__).parents[2] / "config" / "pi.toml",
        environ={"MQTTSPOOL_BROKER__PASSWORD_FILE": str(secret)},
    )
    assert [s.type for s in settings.sensors][:3] == ["bme280", "ds18b20", "cpu_temp"]


ALL_DRIVERS = """
[[sensors]]
type = "bme280"
name = "climate"
interval = 30
bus = "1"
address = "0x77"
oversampling = 4
[[sensors]]
type = "bmp280"
[[sensors]]
type = "sht3x"
repeatability = "low"
[[sensors]]
type = "sht4x"
address = 0x46
[[sensors]]
type = "htu21d"
[[sensors]]
type = "bh1750"
mode = "low"
[[sensors]]
type = "ads1115"
channels = [
  { channel = 0, metric = "soil", unit = "%", scale = -45.45, offset = 150.0 },
  { channel = 3 },
]
[[sensors]]
type = "ds18b20"
device_id = "28-000005e2fdc3"
[[sensors]]
type = "cpu_temp"
[[sensors]]
type = "system"
[[sensors]]
type = "simulated"
name = "sim"
seed = 3
"""


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_check_config_output_loads_back_to_the_same_settings(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "all.toml"
    path.write_text(ALL_DRIVERS, encoding="utf-8")
    args = ["check-config", "-c", str(path)] + (["--json"] if fmt == "json" else [])
    result = subprocess.run(
        [sys.executable, "-m", "mqttspool", *args],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "MQTTSPOOL_DEVICE__ID": "d"},
    )
    assert result.returncode == 0, result.stderr
    original = load_config(path, {"MQTTSPOOL_DEVICE__ID": "d"})
    doc = json.loads(result.stdout) if fmt == "json" else tomllib.loads(result.stdout)
    assert doc == effective_config(original)
    assert doc["sensors"][0]["address"] == 0x77
    assert "path" not in doc["sensors"][7]  # unset (None) options are left out, not "None"
    again = tmp_path / "again.toml"
    again.write_text(to_toml(doc), encoding="utf-8")
    assert load_config(again, {}) == original


def test_config_does_not_import_the_sensor_drivers() -> None:
    code = (
        "import sys\n"
        "from mqttspool.config import load_config\n"
        "load_config(None, {})\n"
        "print(sorted(m for m in sys.modules if m.startswith('mqttspool.sensors')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    ).stdout
    assert out.strip() == "[]"


def test_one_place_turns_validation_errors_into_messages() -> None:
    users = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "mqttspool").rglob("*.py")
        if ".errors()" in path.read_text(encoding="utf-8")
    )
    assert users == ["mqttspool/validation.py"]


def test_error_names_the_sensor_by_index_and_name(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[sensors]]\ntype = "cpu_temp"\n'
        '[[sensors]]\ntype = "bme280"\nname = "bme"\naddress = 0x50\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "mqttspool", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == [
        '  sensors.1 (name "bme"): address: must be one of 0x76, 0x77 (got 0x50)'
    ]
