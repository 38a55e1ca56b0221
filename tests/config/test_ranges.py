"""Ranges and topic levels are checked at load time: values that would crash the daemon exit 2.

Black-box: ``python -m mqttspool check-config`` with an environment override
(or a TOML file where the environment cannot reach, e.g. ``[[sensors]]``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400


def _check_config(
    tmp_path: Path, env: dict[str, str], toml: str = ""
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MQTTSPOOL_")}
    args = [sys.executable, "-m", "mqttspool", "check-config", "--json"]
    if toml:
        path = tmp_path / "c.toml"
        path.write_text(toml, encoding="utf-8")
        args += ["-c", str(path)]
    return subprocess.run(
        args,
        cwd=tmp_path,
        env=clean | {"PYTHONPATH": str(ROOT)} | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


REJECTED = [
    # durations (30 days at most) -- inf and 1e13 crashed connect, sampling or shutdown
    ("bridge.live_window", "inf", "finite number"),
    ("bridge.live_window", "1e13", f"less than or equal to {30 * DAY}"),
    ("bridge.live_window", "-1", "greater than or equal to 0"),
    ("bridge.shutdown_timeout", "inf", "finite number"),
    ("bridge.shutdown_timeout", "1e13", f"less than or equal to {30 * DAY}"),
    ("bridge.shutdown_timeout", "nan", "finite number"),
    ("bridge.reconnect_min", "0", "greater than 0"),
    ("bridge.reconnect_max", "1e13", f"less than or equal to {30 * DAY}"),
    # the resend bound (readings) and the fsync interval of deletes
    ("bridge.max_resend", "0", "greater than or equal to 1"),
    ("bridge.max_resend", "1000001", "less than or equal to 1000000"),
    ("bridge.settle_interval", "0", "greater than 0"),
    ("bridge.settle_interval", "inf", "finite number"),
    ("bridge.settle_interval", "3601", "less than or equal to 3600"),
    # an age: a year at most
    ("spool.max_age", "inf", "finite number"),
    ("spool.max_age", "1e13", f"less than or equal to {365 * DAY}"),
    ("spool.max_age", str(365 * DAY + 1), f"less than or equal to {365 * DAY}"),
    # a rate in messages/s: 0 (unlimited) or 1e-6 .. 1e6
    ("bridge.max_rate", "inf", "finite number"),
    ("bridge.max_rate", "-1", "greater than or equal to 0"),
    ("bridge.max_rate", "1e13", "less than or equal to 1000000"),
    ("bridge.max_rate", "1e-9", "must be 0 (unlimited) or at least 1e-06 messages/s"),
    # sizes and counts
    ("spool.max_rows", "0", "greater than or equal to 1"),
    ("spool.max_rows", "1000000001", "less than or equal to 1000000000"),
    ("spool.min_free_bytes", "-1", "greater than or equal to 0"),
    ("spool.min_free_bytes", str((1 << 60) + 1), f"less than or equal to {1 << 60}"),
    ("bridge.max_inflight", "65536", "less than or equal to 65535"),
    # ports and the keepalive
    ("broker.port", "0", "greater than or equal to 1"),
    ("broker.port", "65536", "less than or equal to 65535"),
    ("metrics.port", "0", "greater than or equal to 1"),
    ("metrics.port", "65536", "less than or equal to 65535"),
    ("broker.keepalive", "1e13", "valid integer"),
    # topic levels
    ("homeassistant.prefix", "ha/#", "must not contain the MQTT wildcards '+' or '#'"),
    ("homeassistant.prefix", "$SYS/ha", "must not start with '$'"),
    ("homeassistant.prefix", "", "must not be empty"),
    ("topics.prefix", "a/+/b", "must not contain the MQTT wildcards '+' or '#'"),
    ("topics.prefix", "a//b", "must not have empty levels"),
    ("topics.prefix", "/a", "must not have empty levels"),
    ("topics.prefix", "a/", "must not have empty levels"),
    ("topics.prefix", " a", "must not start or end with whitespace"),
    ("topics.prefix", "a\tb", "must not contain control characters"),
    ("device.id", "a/b", "should match pattern"),
    ("device.id", "$dev", "should match pattern"),
    ("device.id", "dev#", "should match pattern"),
]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    REJECTED,
    ids=[f"{field}={value!r}" for field, value, _ in REJECTED],
)
def test_bad_value_exits_2_naming_field_and_value(
    tmp_path: Path, field: str, value: str, message: str
) -> None:
    env_key = "MQTTSPOOL_" + field.upper().replace(".", "__")
    result = _check_config(tmp_path, {env_key: value})
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    line = f"{field} ({env_key}): "  # a value from the environment names its variable
    [problem] = [x.strip() for x in result.stderr.splitlines() if x.strip().startswith(line)]
    assert message in problem
    assert problem.endswith(f"(got {json.dumps(value)})")


SENSOR_REJECTED = [
    ("interval = inf", "interval: Input should be a finite number (got inf)"),
    ("interval = 1e13", f"interval: Input should be less than or equal to {30 * DAY}"),
    ("interval = 0", "interval: Input should be greater than or equal to 0.01 (got 0)"),
    ("interval = -5", "interval: Input should be greater than or equal to 0.01 (got -5)"),
    ("seed = nan", "seed: Input should be a finite number (got nan)"),
]


@pytest.mark.parametrize(("line", "message"), SENSOR_REJECTED)
def test_bad_sensor_interval_exits_2_naming_the_sensor(
    tmp_path: Path, line: str, message: str
) -> None:
    toml = f'[[sensors]]\ntype = "simulated"\nname = "sim"\n{line}\n'
    result = _check_config(tmp_path, {}, toml)
    assert result.returncode == 2, result.stdout
    assert f'sensors.0 (name "sim"): {message}' in result.stderr


def test_nul_in_a_topic_prefix_exits_2(tmp_path: Path) -> None:
    # The environment cannot carry a NUL; TOML can (\u0000).
    result = _check_config(tmp_path, {}, '[topics]\nprefix = "a\\u0000b"\n')
    assert result.returncode == 2
    assert 'topics.prefix: must not contain control characters (NUL, newline, ...) (got "a' in (
        result.stderr
    )


ACCEPTED: dict[str, tuple[str, Any]] = {
    "MQTTSPOOL_BRIDGE__LIVE_WINDOW": (str(30 * DAY), 30 * DAY),
    "MQTTSPOOL_BRIDGE__SHUTDOWN_TIMEOUT": ("0", 0),
    "MQTTSPOOL_BRIDGE__RECONNECT_MIN": ("0.001", 0.001),
    "MQTTSPOOL_BRIDGE__RECONNECT_MAX": (str(30 * DAY), 30 * DAY),
    "MQTTSPOOL_BRIDGE__MAX_RATE": ("0.2", 0.2),
    "MQTTSPOOL_BRIDGE__MAX_INFLIGHT": ("65535", 65535),
    "MQTTSPOOL_SPOOL__MAX_AGE": (str(365 * DAY), 365 * DAY),
    "MQTTSPOOL_SPOOL__MAX_ROWS": ("1000000000", 1_000_000_000),
    "MQTTSPOOL_SPOOL__MIN_FREE_BYTES": (str(1 << 60), 1 << 60),
    "MQTTSPOOL_BROKER__PORT": ("65535", 65535),
    "MQTTSPOOL_METRICS__PORT": ("1", 1),
    "MQTTSPOOL_TOPICS__PREFIX": ("site 1/büro/mqtt$", "site 1/büro/mqtt$"),
    "MQTTSPOOL_HOMEASSISTANT__PREFIX": ("ha/discovery", "ha/discovery"),
    "MQTTSPOOL_DEVICE__ID": ("x" * 64, "x" * 64),
}


@pytest.mark.parametrize(
    ("rate", "expected"), [("0", 0), ("1e-6", 1e-6), ("0.2", 0.2), ("1000000", 1e6)]
)
def test_max_rate_is_a_rate_in_messages_per_second(
    tmp_path: Path, rate: str, expected: float
) -> None:
    result = _check_config(tmp_path, {"MQTTSPOOL_BRIDGE__MAX_RATE": rate})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["bridge"]["max_rate"] == expected


def test_boundary_values_are_accepted(tmp_path: Path) -> None:
    toml = (
        '[[sensors]]\ntype = "simulated"\nname = "fast"\ninterval = 0.01\n'
        f'[[sensors]]\ntype = "simulated"\nname = "slow"\ninterval = {30 * DAY}\n'
    )
    result = _check_config(tmp_path, {k: v for k, (v, _) in ACCEPTED.items()}, toml)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    for key, (_, expected) in ACCEPTED.items():
        section, field = key.removeprefix("MQTTSPOOL_").lower().split("__")
        assert doc[section][field] == expected, key
    assert [s["interval"] for s in doc["sensors"]] == [0.01, 30 * DAY]
