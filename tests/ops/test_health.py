"""``mqttspool health`` fast path: same config rules, same answers, no heavy imports."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mqttspool import health
from mqttspool.cli import main
from mqttspool.config import config_path_from, load_config
from mqttspool.health import (
    HEARTBEAT_BYTES,
    Heartbeat,
    check_health,
    fast_health,
    heartbeat_path,
    read_heartbeat,
    sampler_stuck_limit,
    write_heartbeat,
)


def _beat(state: str = "running", age_s: float = 0.0, **extra: object) -> Heartbeat:
    doc: dict[str, object] = {
        "state": state,
        "pid": 1,
        "wall_us": time.time_ns() // 1000 - int(age_s * 1e6),
        "threads": {"sampler": True, "bridge": True},
        "connected": True,
        **extra,
    }
    return Heartbeat(**doc)  # type: ignore[arg-type]


def _spool_with_heartbeat(path: Path, state: str = "running", age_s: float = 0.0) -> None:
    write_heartbeat(heartbeat_path(path), _beat(state, age_s))


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
        ("[spool\n", {}),
        ("[spool]\npath = 5\n", {}),
        ("spool = 5\n", {}),
        ("", {"MQTTSPOOL_SPOOL": '{"path": "x.db"}'}),
        ("", {"MQTTSPOOL_SPOOL__PATH": "a.db", "mqttspool_spool__path": "b.db"}),
    ],
)
def test_odd_values_take_the_full_path(tmp_path: Path, toml: str, env: dict[str, str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    assert health._spool_path(str(cfg), env) is None


def test_other_settings_are_not_judged_by_the_fast_path(tmp_path: Path) -> None:
    """The daemon validated its configuration at start; health answers for the daemon."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[spool]\npath = 'x.db'\nmax_rows = 5\n[broker]\nport = 'any'\n")
    assert health._spool_path(str(cfg), {"MQTTSPOOL_BRIDGE__WHATEVER": "1"}) == "x.db"


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
    assert capsys.readouterr().out == (
        f"unhealthy: no heartbeat: no daemon has run with spool {db} ({db}.health)\n"
    )
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


def test_healthy_answer_skips_the_command_lines_own_imports(tmp_path: Path) -> None:
    """Only the heartbeat and the shared settings rules: no argparse, logging, dataclasses."""
    db = tmp_path / "s.db"
    _spool_with_heartbeat(db)
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from mqttspool.cli import main\n"
        "rc = main(['health'])\n"
        "new = set(sys.modules) - before\n"
        "print(rc, sorted(new & {'argparse', 'logging', 'dataclasses', 'tomllib', 'inspect',"
        " 'mqttspool.cli.app', 'mqttspool.config'}))\n"
    )
    env = {**os.environ, "MQTTSPOOL_SPOOL__PATH": str(db)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "0 []"


# ------------------------------------------------------------ the judgement


def _judge(tmp_path: Path, beat: Heartbeat) -> str:
    """Write ``beat`` as the daemon does and return health's answer line."""
    spool = tmp_path / "s.db"
    write_heartbeat(heartbeat_path(spool), beat)
    health = check_health(str(spool))
    return ("healthy: " if health.ok else "unhealthy: ") + health.reason


@pytest.mark.parametrize(
    ("extra", "answer"),
    [
        pytest.param({}, "healthy: running, heartbeat 0.0 s old, broker connected", id="plain"),
        pytest.param(
            {"sampler_idle_s": 29.0, "sampler_limit_s": 30.0},
            "healthy: running, heartbeat 0.0 s old, broker connected",
            id="sampler-within-limit",
        ),
        pytest.param(
            {"sampler_idle_s": 31.0, "sampler_limit_s": 30.0},
            "unhealthy: sampler stuck: no sampling round finished for 31 s (limit 30 s)",
            id="sampler-stuck",
        ),
        pytest.param(
            {"unacked_for_s": None, "unacked_limit_s": 90.0},
            "healthy: running, heartbeat 0.0 s old, broker connected",
            id="nothing-in-flight",
        ),
        pytest.param(
            {"unacked_for_s": 89.0, "unacked_limit_s": 90.0},
            "healthy: running, heartbeat 0.0 s old, broker connected",
            id="window-within-limit",
        ),
        pytest.param(
            {"unacked_for_s": 95.0, "unacked_limit_s": 90.0},
            "unhealthy: bridge stalled: a message has been unacknowledged for 95 s (limit 90 s)",
            id="window-stalled",
        ),
        pytest.param(
            {"threads": {"sampler": True, "bridge": False}},
            "unhealthy: thread(s) not running: bridge",
            id="dead-thread",
        ),
    ],
)
def test_judgement_of_synthetic_heartbeats(
    tmp_path: Path, extra: dict[str, Any], answer: str
) -> None:
    beat = _beat(**extra)
    now_us = beat.wall_us
    spool = tmp_path / "s.db"
    write_heartbeat(heartbeat_path(spool), beat)
    health = check_health(str(spool), now_us=now_us)
    assert ("healthy: " if health.ok else "unhealthy: ") + health.reason == answer


def test_stopped_stale_and_missing_heartbeats(tmp_path: Path) -> None:
    assert _judge(tmp_path, _beat("stopped", age_s=3)) == "unhealthy: daemon is stopped (since 3 s)"
    assert _judge(tmp_path, _beat(age_s=60)) == "unhealthy: heartbeat is stale (60 s old; PID 1)"
    heartbeat_path(tmp_path / "s.db").write_text("{not json")
    assert _judge_existing(tmp_path).startswith("unhealthy: cannot read the heartbeat ")
    assert check_health(str(tmp_path / "none.db")).reason == (
        f"no heartbeat: no daemon has run with spool {tmp_path / 'none.db'}"
        f" ({tmp_path / 'none.db'}.health)"
    )


def _judge_existing(tmp_path: Path) -> str:
    health = check_health(str(tmp_path / "s.db"))
    return ("healthy: " if health.ok else "unhealthy: ") + health.reason


def test_sampler_limit_is_a_few_of_the_shortest_intervals() -> None:
    assert sampler_stuck_limit([1.0, 10.0]) == 30.0  # never below 30 s
    assert sampler_stuck_limit([20.0, 60.0]) == 60.0
    assert sampler_stuck_limit([3600.0]) == 180.0  # the sampler wakes at least once a minute


def test_heartbeat_file_has_a_fixed_size_and_is_overwritten_in_place(tmp_path: Path) -> None:
    """One page rewritten in place (no new file, and so no new blocks on the SD card, every 5 s)."""
    path = heartbeat_path(tmp_path / "s.db")
    write_heartbeat(path, _beat())
    inode = path.stat().st_ino
    write_heartbeat(path, _beat("stopped"))
    assert path.stat().st_size == HEARTBEAT_BYTES
    assert path.stat().st_ino == inode  # the same file, overwritten
    assert read_heartbeat(path).state == "stopped"
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_a_heartbeat_of_another_size_is_replaced_whole(tmp_path: Path) -> None:
    path = heartbeat_path(tmp_path / "s.db")
    path.write_bytes(b"{}")  # e.g. written by another version
    write_heartbeat(path, _beat("running"))
    assert path.stat().st_size == HEARTBEAT_BYTES
    assert read_heartbeat(path).state == "running"


def test_heartbeat_is_written_in_place_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = heartbeat_path(tmp_path / "s.db")
    write_heartbeat(path, _beat(age_s=10))
    real_write_bytes = Path.write_bytes

    def full_disk(self: Path, data: bytes) -> int:
        if self.name.endswith(".tmp"):
            real_write_bytes(self, b"")  # created, then no block for the data
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    fresh = _beat()
    write_heartbeat(path, fresh)
    assert read_heartbeat(path) == fresh
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    path.unlink()  # no file to overwrite: the error is the caller's (logged, rate-limited)
    with pytest.raises(OSError, match="No space left"):
        write_heartbeat(path, fresh)
