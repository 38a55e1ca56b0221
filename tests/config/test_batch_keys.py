"""The batch keys of ``[bridge]``: defaults keep per-reading behaviour, ranges are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqttspool.config import load_config
from mqttspool.errors import ConfigError


def test_defaults_keep_one_reading_per_message() -> None:
    cfg = load_config(None, {}).bridge
    assert (cfg.payload, cfg.batch_max_readings, cfg.batch_max_bytes, cfg.batch_linger) == (
        "reading",
        1000,
        65536,
        10,
    )


def test_environment_selects_mixed_batches() -> None:
    env = {
        "MQTTSPOOL_BRIDGE__PAYLOAD": "mixed",
        "MQTTSPOOL_BRIDGE__BATCH_MAX_READINGS": "250",
        "MQTTSPOOL_BRIDGE__BATCH_MAX_BYTES": "4096",
        "MQTTSPOOL_BRIDGE__BATCH_LINGER": "0.5",
    }
    cfg = load_config(None, env).bridge
    assert (cfg.payload, cfg.batch_max_readings, cfg.batch_max_bytes, cfg.batch_linger) == (
        "mixed",
        250,
        4096,
        0.5,
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("payload", "json", "Input should be 'reading', 'batch' or 'mixed'"),
        ("batch_max_readings", "0", "greater than or equal to 1"),
        ("batch_max_readings", "65536", "less than or equal to 65535"),
        ("batch_max_bytes", "255", "greater than or equal to 256"),
        ("batch_max_bytes", "16777217", "less than or equal to 16777216"),
        ("batch_linger", "-1", "greater than or equal to 0"),
        ("batch_linger", "3601", "less than or equal to 3600"),
        ("batch_linger", "inf", "finite number"),
    ],
)
def test_out_of_range_values_name_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {f"MQTTSPOOL_BRIDGE__{key.upper()}": value})
    [(path, problem)] = info.value.problems
    assert path == f"bridge.{key} (MQTTSPOOL_BRIDGE__{key.upper()})"
    assert message in problem


@pytest.mark.parametrize(
    ("env", "max_resend"),
    [
        ({}, 2000),
        ({"PAYLOAD": "batch"}, 20_000),
        ({"PAYLOAD": "mixed", "BATCH_MAX_READINGS": "250"}, 5000),
        ({"PAYLOAD": "batch", "BATCH_MAX_READINGS": "65535"}, 1_000_000),  # the key's maximum
        ({"PAYLOAD": "batch", "MAX_RESEND": "2000"}, 2000),  # set: it wins
        ({"MAX_RESEND": "300"}, 300),
    ],
)
def test_max_resend_defaults_to_one_window_of_batches_with_batches(
    env: dict[str, str], max_resend: int
) -> None:
    cfg = load_config(None, {f"MQTTSPOOL_BRIDGE__{k}": v for k, v in env.items()}).bridge
    assert cfg.max_resend == max_resend


def test_the_max_resend_default_follows_the_payload_mode_unless_it_was_set(
    tmp_path: Path,
) -> None:
    config = tmp_path / "mqttspool.toml"
    config.write_text('[bridge]\npayload = "batch"\n')
    cfg = load_config(config, {}).bridge
    assert cfg.max_resend == 20_000
    cfg.payload = "reading"
    assert cfg.max_resend == 2000
    cfg.max_resend = 5000
    cfg.payload = "mixed"
    assert cfg.max_resend == 5000
