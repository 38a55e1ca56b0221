"""A throw-away PostgreSQL server for tests (Debian's `postgresql` package).

`initdb` into a temp dir and `postgres` on an ephemeral 127.0.0.1 port with
trust authentication, run as the `postgres` user when the tests run as root
(postgres refuses root). Each test gets its own database
(:meth:`PostgresServer.create_database`). Stopped by the postmaster's PID.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .servers import starting

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0


class PostgresMissingError(RuntimeError):
    """No PostgreSQL server binaries (apt-get install postgresql)."""


def find_postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``initdb`` and ``postgres``."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        raise PostgresMissingError(
            "PostgreSQL server not installed (/usr/lib/postgresql/*/bin/postgres):"
            " apt-get install postgresql"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One postgres process on 127.0.0.1; :attr:`port` once started."""

    def __init__(self) -> None:
        self.bindir = find_postgres_bin()
        self.as_user = "postgres" if os.geteuid() == 0 else None
        self.datadir = Path(tempfile.mkdtemp(prefix="pg-"))
        self.port = _free_port()
        self.log_path = self.datadir.parent / f"{self.datadir.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._databases = 0

    def _command(self, *argv: str) -> list[str]:
        if self.as_user is None:
            return list(argv)
        return ["runuser", "-u", self.as_user, "--", *argv]

    def start(self) -> None:
        """initdb, start, wait until it accepts connections."""
        starting("PostgreSQL")
        if self.as_user is not None:
            entry = pwd.getpwnam(self.as_user)
            os.chown(self.datadir, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            self._command(
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
        )
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self._command(
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-k",
                    str(self.datadir),
                    "-F",
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)  # poll interval of a deadline-bounded wait
        raise RuntimeError(f"postgres did not start:\n{self.log_text()}")

    def log_text(self) -> str:
        """The server log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for ``database``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh empty database; returns its URL."""
        import psycopg  # noqa: PLC0415 - only where PostgreSQL tests run

        self._databases += 1
        name = f"t{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def _postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), then remove the data dir."""
        pid = self._postmaster_pid()
        proc = self._proc
        if pid is not None and proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        if proc is not None:
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                proc.wait(5)
        shutil.rmtree(self.datadir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)
