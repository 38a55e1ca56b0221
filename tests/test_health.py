"""``mqttspool health`` fast path: same config rules, same answers, no heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from mqttspool import health
from mqttspool.cli import main
from mqttspool.config import Settings, config_path_from, load_config
from mqttspool.health import HEARTBEAT_KEY, fast_health
from mqttspool.spool import open_spool


def _leaves(model: type[BaseModel], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _leaves(ann, f"{prefix}{name}.")
        elif name != "sensors":
            out.add(f"{prefix}{name}")
    return out


def test_known_settings_match_the_model_tree() -> None:
    assert _leaves(Settings) == health.KNOWN_SETTINGS


def _spool_with_heartbeat(path: Path, state: str = "running", age_s: float = 0.0) -> None:
    settings = load_config(None, {"MQTTSPOOL_SPOOL__PATH": str(path)})
    spool = open_spool(settings.spool)
    doc = {
        "state": state,
        "pid": 1,
        "wall_us": time.time_ns() // 1000 - int(age_s * 1e6),
        "threads": {"sampler": True, "bridge": True},
        "connected": True,
    }
    spool.write_meta(HEARTBEAT_KEY, json.dumps(doc))
    spool.close()


CASES = [
    pytest.param(["health"], {}, None, id="defaults"),
    pytest.param(["health"], {"MQTTSPOOL_SPOOL__PATH": "env.db"}, None, id="env"),
    pytest.param(["health"], {"mqttspool_spool__path": "lower.db"}, None, id="env-lowercase"),
    pytest.param(["-c", "{cfg}", "health"], {}, 'path = "file.db"', id="file"),
    pytest.param(["health", "--config={cfg}"], {}, 'path = "file.db"', id="file-after"),
    pytest.param(
        ["health", "-c", "{cfg}"],
        {"MQTTSPOOL_SPOOL__PATH": "env.db"},
        'path = "file.db"',
        id="env-wins-over-file",
    ),
    pytest.param(
        ["health"], {"MQTTSPOOL_CONFIG": "{cfg}"}, 'path = "file.db"', id="MQTTSPOOL_CONFIG"
    ),
    pytest.param(["health"], {"MQTTSPOOL_CONFIG": "{cfg}"}, "max_rows = 5", id="file-no-path"),
]


@pytest.mark.parametrize(("argv", "env", "spool_table"), CASES)
def test_spool_path_resolution_matches_load_config(
    tmp_path: Path, argv: list[str], env: dict[str, str], spool_table: str | None
) -> None:
    cfg = tmp_path / "c.toml"
    if spool_table is not None:
        cfg.write_text(f"[spool]\n{spool_table}\n")
    argv = [a.replace("{cfg}", str(cfg)) for a in argv]
    env = {k: v.replace("{cfg}", str(cfg)) for k, v in env.items()}
    config = health._health_config_option(argv)
    assert config is not None
    expected = load_config(config_path_from(config or None, env), env).spool.path
    assert health._spool_path(config or env.get("MQTTSPOOL_CONFIG"), env) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["health", "--help"],
        ["-cfile.toml", "health"],
        ["health", "--log-level", "loud"],
        ["health", "extra"],
        ["--log-level", "debug"],
    ],
)
def test_anything_unusual_takes_the_full_path(argv: list[str]) -> None:
    assert health._health_config_option(argv) is None


@pytest.mark.parametrize(
    ("toml", "env"),
    [
        ("[spool]\npth = 'x.db'\n", {}),
        ("[spool\n", {}),
        ("[spool]\npath = 5\n", {}),
        ("", {"MQTTSPOOL_SPOOL__PTH": "x.db"}),
        ("", {"MQTTSPOOL_SPOOL": '{"path": "x.db"}'}),
    ],
)
def test_unknown_keys_and_odd_values_take_the_full_path(
    tmp_path: Path, toml: str, env: dict[str, str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    assert health._spool_path(str(cfg), env) is None


def test_fast_path_answers_healthy_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    env = {"MQTTSPOOL_SPOOL__PATH": str(db)}
    assert fast_health(["health"], env) is None  # no spool: the full path says why
    _spool_with_heartbeat(db)
    assert fast_health(["health"], env) == 0
    assert capsys.readouterr().out.startswith("healthy: running, heartbeat ")
    _spool_with_heartbeat(db, state="stopped")
    assert fast_health(["health"], env) is None
    _spool_with_heartbeat(db, age_s=60)
    assert fast_health(["health"], env) is None


def test_full_path_answers_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "s.db"
    monkeypatch.setenv("MQTTSPOOL_SPOOL__PATH", str(db))
    assert main(["health"]) == 1
    assert capsys.readouterr().out == f"unhealthy: no mqttspool spool at {db}\n"
    _spool_with_heartbeat(db, state="stopped", age_s=3)
    assert main(["health"]) == 1
    assert capsys.readouterr().out == "unhealthy: daemon is stopped (since 3 s)\n"
    monkeypatch.setenv("MQTTSPOOL_BROKER__PROT", "1")
    assert main(["health"]) == 1  # not 2: Docker reserves health-check exit code 2
    assert "MQTTSPOOL_BROKER__PROT: unknown setting" in capsys.readouterr().err


def test_healthy_answer_imports_no_heavy_library(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _spool_with_heartbeat(db)
    code = (
        "import sys\n"
        "from mqttspool.cli import main\n"
        "rc = main(['health'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pydantic', 'pydantic_settings', 'peewee', 'paho', 'prometheus_client'})\n"
        "print(rc, heavy)\n"
    )
    env = {**os.environ, "MQTTSPOOL_SPOOL__PATH": str(db)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "0 []"
