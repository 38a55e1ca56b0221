"""One ``run`` or ``drain`` per spool: the second refuses at once, naming the holder's PID."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from support.daemon import Daemon, mqttspool_env, run_cli

pytestmark = pytest.mark.integration


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refusal(spool: Path, pid: int) -> str:
    return (
        f"mqttspool: error: spool {spool}: in use by another mqttspool run or drain"
        f" (PID {pid}, lock {spool}.lock); stop that process first, or give this one its own"
        " spool.path\n"
    )


def test_second_run_and_drain_refuse_while_enqueue_and_status_work(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    env = mqttspool_env(spool, unused_port())  # no broker: the daemon spools
    first = Daemon(env)
    try:
        first.wait_log(r"starting: device edge-01", 20)
        second = run_cli(["run"], env, timeout=20)
        assert (second.returncode, second.stderr) == (1, refusal(spool, first.proc.pid))
        drain = run_cli(["drain", "--timeout", "5"], env, timeout=20)
        assert (drain.returncode, drain.stderr) == (1, refusal(spool, first.proc.pid))
        line = json.dumps({"sensor": "s", "metric": "m", "value": 1.0}) + "\n"
        assert run_cli(["enqueue"], env, stdin=line).returncode == 0
        status = run_cli(["status", "--json"], env)
        assert status.returncode == 0 and json.loads(status.stdout)["depth"] >= 1
        assert run_cli(["dead-letters", "list"], env).returncode == 0
        first.kill9()  # the kernel releases the lock; the lock file stays
        assert (tmp_path / "spool.db.lock").exists()
        after = Daemon(env)
        try:
            after.wait_log(r"starting: device edge-01", 20)
            assert after.proc.poll() is None
        finally:
            after.stop()
    finally:
        first.stop()
