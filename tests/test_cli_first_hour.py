"""What a newcomer meets in the first hour: every command says what happened."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from daemon import Daemon, clean_env, mqttspool_env, run_cli, spool_with_backlog


def _into_a_closed_pipe(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``mqttspool ARGS`` with stdout a pipe whose reader has gone (``| head -c 0``)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mqttspool", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    "args",
    [["check-config", "--json"], ["check-config"], ["status", "--json"], ["status"], ["sensors"]],
)
def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "spool.db"
    spool_with_backlog(db, 3)
    env = clean_env(MQTTSPOOL_SPOOL__PATH=str(db))
    code, stderr = _into_a_closed_pipe(args, env, tmp_path)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert code == 1


def _free_port() -> int:
    """A 127.0.0.1 port nobody listens on (bound then released; nothing connects back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_clean_stop_says_how_many_readings_stay_spooled(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    spool_with_backlog(db, 12)
    daemon = Daemon(mqttspool_env(db, _free_port()))
    try:
        daemon.wait_log(r"unreachable", 30)
        daemon.terminate()
        assert daemon.wait(30) == 0
    finally:
        daemon.stop()
    depth = json.loads(run_cli(["status", "--json"], mqttspool_env(db, 1)).stdout)["depth"]
    assert depth >= 12
    [line] = [x for x in daemon.log if "stopped cleanly" in x]
    assert line.endswith(
        f"stopped cleanly; {depth} reading(s) stay spooled (0 of them sent but not"
        " acknowledged: resent with the same id next time)"
    )


def test_sensors_needs_no_broker_password_file_but_broker_commands_do(tmp_path: Path) -> None:
    missing = tmp_path / "broker-password"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[broker]\nusername = "edge"\npassword_file = "{missing}"\n')
    env = clean_env(MQTTSPOOL_SPOOL__PATH=str(tmp_path / "spool.db"))
    sensors = run_cli(["sensors", "-c", str(cfg)], env, cwd=tmp_path)
    assert sensors.returncode == 0, sensors.stderr
    assert sensors.stdout.startswith("simulated")
    for args in (["drain"], ["watch"], ["run"], ["check-config"]):
        proc = run_cli([*args, "-c", str(cfg)], env, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert f"broker.password_file: {missing} does not exist" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def _without_prometheus(tmp_path: Path) -> dict[str, str]:
    """An environment where ``import prometheus_client`` fails, as without the extra."""
    hide = tmp_path / "hide"
    (hide / "prometheus_client").mkdir(parents=True)
    (hide / "prometheus_client" / "__init__.py").write_text(
        "raise ImportError('hidden by the test: the metrics extra is not installed')\n"
    )
    path = os.pathsep.join(p for p in (str(hide), os.environ.get("PYTHONPATH", "")) if p)
    return clean_env(
        PYTHONPATH=path,
        MQTTSPOOL_METRICS__ENABLED="true",
        MQTTSPOOL_SPOOL__PATH=str(tmp_path / "data" / "spool.db"),
    )


def test_check_config_and_run_reject_metrics_without_the_extra_alike(tmp_path: Path) -> None:
    env = _without_prometheus(tmp_path)
    expected = (
        "  metrics.enabled: needs prometheus-client, which is not installed:"
        " pip install 'mqttspool[metrics]'\n"
    )
    for args in (["check-config"], ["run"]):
        proc = run_cli(args, env, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.endswith(expected), proc.stderr
        assert "starting" not in proc.stderr
    assert not (tmp_path / "data").exists()  # run stopped before creating the spool
    env["MQTTSPOOL_METRICS__ENABLED"] = "false"
    assert run_cli(["check-config"], env, cwd=tmp_path).returncode == 0
