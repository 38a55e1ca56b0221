"""Sensor driver options are validated with the rest of the config (exit 2, field paths)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mqttspool.config import load_config
from mqttspool.errors import ConfigError


def test_bad_driver_options_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[sensors]]\ntype = "bme280"\naddress = 0x44\nbogus = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.problems == [
        ("sensors[0].address", "must be one of 0x76, 0x77 (got 0x44)"),
        ("sensors[0].bogus", "unknown option for this sensor type (see docs/sensors.md)"),
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
    assert "sensors[0].bogus: unknown option for this sensor type" in result.stderr


def test_shipped_pi_config_is_valid() -> None:
    settings = load_config(Path(__file__).parents[1] / "config" / "pi.toml", environ={})
    assert [s.type for s in settings.sensors][:3] == ["bme280", "ds18b20", "cpu_temp"]
