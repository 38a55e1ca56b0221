"""What a newcomer meets in the first hour: every command says what happened."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.broker import MosquittoBroker
from support.daemon import Daemon, clean_env, mqttspool_env, run_cli, spool_with_backlog, wait_until


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


@pytest.mark.integration
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


@pytest.mark.parametrize(
    "args",
    [
        ["drain"],
        ["drain", "--timeout", "5"],
        ["status"],
        ["status", "--json"],
        ["dead-letters", "list"],
    ],
)
def test_a_spool_path_that_does_not_exist_is_named_and_never_created(
    tmp_path: Path, args: list[str]
) -> None:
    db = tmp_path / "typo" / "spool.db"
    env = mqttspool_env(db, _free_port())
    proc = run_cli(args, env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.endswith(
        f"mqttspool: error: spool {db}: no spool here (missing file); nothing was created."
        " Check spool.path\n"
    )
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_drain_of_an_empty_spool_exits_0_at_once_without_a_broker(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    spool_with_backlog(db, 0)
    proc = run_cli(["drain"], mqttspool_env(db, _free_port()), timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"nothing to drain: spool {db} is empty\n"
    assert "unreachable" not in proc.stderr


def test_drain_gives_up_on_a_broker_never_reached_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mqttspool import service  # noqa: PLC0415 - the bound, shortened for the test
    from mqttspool.cli import main  # noqa: PLC0415

    db = tmp_path / "spool.db"
    spool_with_backlog(db, 5)
    port = _free_port()
    for key, value in mqttspool_env(db, port).items():
        if key.startswith("MQTTSPOOL_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(service, "DRAIN_CONNECT_S", 1.0)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        assert main(["drain"]) == 1
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert capsys.readouterr().err.endswith(
        f"drain gave up: broker 127.0.0.1:{port} not reached in 1 s: connection refused"
        " (is the broker running and listening on this port?): 0 published, 5 reading(s) remain\n"
    )


def test_drain_sleeps_until_its_next_timer_and_a_stop_request_wakes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mqttspool import service  # noqa: PLC0415
    from mqttspool.config import load_config  # noqa: PLC0415
    from mqttspool.mqtt import MqttPublisher  # noqa: PLC0415
    from mqttspool.runner import StopRequest  # noqa: PLC0415

    db = tmp_path / "spool.db"
    spool_with_backlog(db, 5)
    env = mqttspool_env(db, _free_port(), bridge__reconnect_min=2, bridge__reconnect_max=2)
    settings = load_config(None, environ=env)
    stop = StopRequest()
    waits: list[float] = []
    real_wait = MqttPublisher.wait

    def wait(publisher: MqttPublisher, timeout: float) -> None:
        waits.append(timeout)
        if len(waits) == 2:  # asleep until the next connection attempt (2 s backoff)
            stop.set()  # as SIGINT's handler does: wakes the wait at once
        real_wait(publisher, timeout)

    monkeypatch.setattr(MqttPublisher, "wait", wait)
    result = service.drain(settings, None, stop=stop)
    assert (result.interrupted, result.remaining, result.connected) == (True, 5, False)
    assert len(waits) == 2  # no wake-up in between: the stop ended the second wait
    # Each wait lasts until a timer is due (the connect timeout or the 5 s progress
    # line, then the backoff), never a short poll.
    assert waits[0] > 2.0 and waits[1] == pytest.approx(2.0, abs=0.1)


def _depth(db: Path) -> int:
    proc = run_cli(["status", "--json"], mqttspool_env(db, 1))
    value: int = json.loads(proc.stdout)["depth"]
    return value


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_drain_settles_and_says_how_far_it_got(
    tmp_path: Path, broker: MosquittoBroker, signum: signal.Signals
) -> None:
    db = tmp_path / "spool.db"
    spool_with_backlog(db, 2000)
    env = mqttspool_env(db, broker.port, bridge__max_rate=200)
    # Started with SIGINT ignored, as a shell's `mqttspool drain &` does.
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        drain = Daemon(env, ("drain",))
    finally:
        signal.signal(signal.SIGINT, inherited)
    try:
        wait_until(lambda: _depth(db) < 1900, 30, "some readings published and settled")
        drain.proc.send_signal(signum)
        assert drain.wait(30) == 1
    finally:
        drain.stop()
    [last] = [line for line in drain.log if line.startswith("interrupted:")]
    match = re.fullmatch(r"interrupted: (\d+) published, (\d+) remain", last)
    assert match, last
    published, remain = int(match[1]), int(match[2])
    assert published + remain == 2000
    assert 100 < published < 2000
    assert _depth(db) == remain  # everything acknowledged was settled before exiting


def test_ingest_checks_its_own_metrics_extra_not_runs(tmp_path: Path) -> None:
    env = _without_prometheus(tmp_path)
    env["MQTTSPOOL_INGEST__DB"] = str(tmp_path / "ingest.db")
    env["MQTTSPOOL_BROKER__PORT"] = str(_free_port())
    # run's [metrics] is on (the helper's setting), ingest's is off: ingest is not refused for it.
    proc = run_cli(["ingest", "--report"], env, cwd=tmp_path)
    assert "metrics.enabled" not in proc.stderr, proc.stderr
    env["MQTTSPOOL_INGEST__METRICS__ENABLED"] = "true"
    (tmp_path / "ingest.db").unlink(missing_ok=True)
    proc = run_cli(["ingest"], env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.endswith(
        "  ingest.metrics.enabled: needs prometheus-client, which is not installed:"
        " pip install 'mqttspool[metrics]'\n"
    ), proc.stderr
    assert not (tmp_path / "ingest.db").exists()
