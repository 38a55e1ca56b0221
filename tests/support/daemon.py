"""Run ``mqttspool`` commands as real processes for integration tests.

:class:`Daemon` starts ``python -m mqttspool run`` with an environment built
from keyword overrides, collects its stderr in a thread, and lets a test wait
for a log line, SIGTERM it or SIGKILL it (by PID, never by name).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading, from_us
from mqttspool.spool import Spool, open_spool
from support.servers import starting
from support.spooltools import high_water_seq as spool_high_water_seq


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms until true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)  # the poll interval of a deadline-bounded wait


def mqttspool_env(spool: Path, port: int, **settings: object) -> dict[str, str]:
    """Environment for an ``mqttspool`` child: spool, broker on 127.0.0.1:port, overrides.

    Keyword names are ``section__key`` (e.g. ``bridge__max_inflight=100``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTTSPOOL_")}
    env.update(
        {
            "MQTTSPOOL_SPOOL__PATH": str(spool),
            "MQTTSPOOL_BROKER__HOST": "127.0.0.1",
            "MQTTSPOOL_BROKER__PORT": str(port),
            "MQTTSPOOL_DEVICE__ID": "edge-01",
            "MQTTSPOOL_BRIDGE__RECONNECT_MIN": "0.2",
            "MQTTSPOOL_BRIDGE__RECONNECT_MAX": "1",
        }
    )
    for key, value in settings.items():
        env[f"MQTTSPOOL_{key.upper()}"] = str(value)
    return env


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment without any ``MQTTSPOOL_*`` variable, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MQTTSPOOL_")}
    return env | variables


def run_cli(
    args: list[str],
    env: Mapping[str, str],
    timeout: float = 60,
    stdin: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m mqttspool ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "mqttspool", *args],
        cwd=cwd,
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Daemon:
    """``mqttspool run`` as a child process."""

    def __init__(self, env: Mapping[str, str], args: tuple[str, ...] = ("run",)) -> None:
        starting(f"`mqttspool {' '.join(args)}` as a long-running process")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mqttspool", *args],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def log(self) -> list[str]:
        """Every line so far."""
        with self._cond:
            return list(self._lines)

    def wait_log(self, pattern: str, timeout: float, count: int = 1) -> list[str]:
        """Wait until ``count`` lines match ``pattern``; returns them (fails with the log)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [line for line in self._lines if regex.search(line)]
                if len(hits) >= count:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    tail = "\n".join(self._lines[-40:])
                    raise AssertionError(f"no {count}× /{pattern}/ in the daemon log:\n{tail}")
                self._cond.wait(min(left, 0.2))

    def terminate(self) -> None:
        """SIGTERM."""
        self.proc.send_signal(signal.SIGTERM)

    def kill9(self) -> None:
        """SIGKILL and reap."""
        self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)

    def wait(self, timeout: float) -> int:
        """Exit code (raises TimeoutExpired)."""
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def stop(self) -> None:
        """Cleanup: terminate, then kill if needed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)


def spool_with_backlog(
    path: Path, n: int, device: str = "edge-01", age_s: float = 0.0, batch: int = 5000
) -> list[int]:
    """Create a spool at ``path`` holding ``n`` readings; returns their seqs."""
    spool = open_spool(SpoolConfig(path=str(path), synchronous="normal"))
    try:
        return append_backlog(spool, n, device, age_s, batch)
    finally:
        spool.close()


def append_backlog(
    spool: Spool, n: int, device: str = "edge-01", age_s: float = 0.0, batch: int = 5000
) -> list[int]:
    """Append ``n`` readings of ``device`` to an open spool; returns their seqs."""
    ts = from_us(time.time_ns() // 1000 - int(age_s * 1_000_000))
    seqs: list[int] = []
    for start in range(0, n, batch):
        readings = [
            Reading(device=device, sensor="bench", metric="value", value=float(i), ts=ts)
            for i in range(start, min(n, start + batch))
        ]
        seqs.extend(spool.append(readings).seqs)
    return seqs


def high_water_seq(path: Path) -> int:
    """The highest seq ever assigned in the spool (AUTOINCREMENT counter)."""
    spool = open_spool(SpoolConfig(path=str(path)))
    try:
        return spool_high_water_seq(spool)
    finally:
        spool.close()
