"""A real mosquitto process for integration tests, configured from `mosquitto/`.

The broker configs shipped in the repository's `mosquitto/` directory (used by
docker compose) are the single source of truth: `render_test_config` copies a
shipped file and rewrites only what cannot work outside the container — the
listener (an ephemeral port bound to 127.0.0.1), file paths (temp dirs), the log
destination (a file, so `log_text()` is current while mosquitto runs) and the
`user` to run as — plus any override a test asks for explicitly
(`max_inflight_messages`, `require_certificate`). `tests/project/test_harness.py`
checks that nothing else differs.

Typical use (the `broker_factory` fixture does this for you)::

    broker = MosquittoBroker(tmp_path, "auth")
    broker.start()
    ...connect to broker.host, broker.port as "edge-01" / broker.users["edge-01"]...
    broker.restart()   # same port, sessions persisted by mosquitto
    broker.kill()      # SIGKILL: in-memory state since the last autosave is lost
    broker.start()     # back on the same port
    broker.stop()
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Literal, Protocol, Self

from .certs import CertBundle
from .servers import starting

__all__ = [
    "DEFAULT_MAX_INFLIGHT",
    "MOSQUITTO_DIR",
    "REWRITTEN_KEYS",
    "SHIPPED_CONFIGS",
    "TEST_USERS",
    "BrokerFactory",
    "BrokerKind",
    "BrokerStartError",
    "MosquittoBroker",
    "MosquittoMissingError",
    "find_mosquitto",
    "parse_directives",
    "render_test_config",
]

BrokerKind = Literal["plain", "auth", "tls"]

MOSQUITTO_DIR = Path(__file__).resolve().parents[2] / "mosquitto"
SHIPPED_CONFIGS: Mapping[BrokerKind, Path] = {
    "plain": MOSQUITTO_DIR / "mosquitto.conf",
    "auth": MOSQUITTO_DIR / "auth.conf",
    "tls": MOSQUITTO_DIR / "tls.conf",
}
SHIPPED_ACL = MOSQUITTO_DIR / "acl"

# Directives whose value the test config may differ in from the shipped file.
# Everything else must be passed through verbatim (checked by tests/project/test_harness.py).
REWRITTEN_KEYS = frozenset(
    {
        "listener",
        "log_dest",
        "user",
        "persistence_location",
        "password_file",
        "acl_file",
        "cafile",
        "certfile",
        "keyfile",
    }
)

# Mosquitto's built-in value, for tests that want the unconfigured behaviour.
DEFAULT_MAX_INFLIGHT = 20

# Users in the auth broker's password file; the ACL (mosquitto/acl) gives each
# device user write access to mqttspool/<user>/# and `dashboard` read access.
TEST_USERS: Mapping[str, str] = {
    "edge-01": "edge-01-secret",
    "edge-02": "edge-02-secret",
    "dashboard": "dashboard-secret",
}

_HOST = "127.0.0.1"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_BIND_ATTEMPTS = 5
_PROBE_INTERVAL = 0.02


class BrokerFactory(Protocol):
    """Signature of the `broker_factory` fixture: returns a started broker."""

    def __call__(
        self,
        kind: BrokerKind = "plain",
        *,
        require_certificate: bool = False,
        max_inflight_messages: int | None = None,
    ) -> MosquittoBroker:
        """Start a broker of `kind`; it is stopped when the test ends."""
        ...


class MosquittoMissingError(RuntimeError):
    """The mosquitto broker (or mosquitto_passwd) binary is not installed."""


class BrokerStartError(RuntimeError):
    """mosquitto exited or did not accept connections in time; carries its log."""


def find_mosquitto(name: str = "mosquitto") -> str:
    """Return the path of a mosquitto binary (also looked up in sbin dirs)."""
    search = os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"]
    )
    path = shutil.which(name, path=search)
    if path is None:
        raise MosquittoMissingError(
            f"`{name}` is not installed (Debian: apt-get install mosquitto)"
        )
    return path


def parse_directives(text: str) -> list[tuple[str, str]]:
    """Return the (key, value) directives of a mosquitto config, comments dropped."""
    directives: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        directives.append((key, value.strip()))
    return directives


def render_test_config(
    shipped: str,
    *,
    port: int,
    paths: Mapping[str, str],
    overrides: Mapping[str, str],
    run_as: str,
) -> str:
    """Rewrite a shipped config for a test run.

    The single listener becomes `listener <port> 127.0.0.1`; each directive
    named in `paths` gets that value; each directive in `overrides` is replaced
    (or appended after the listener if absent); `user` is set to `run_as` (so a
    root test run does not drop to the `mosquitto` user, which could not read
    the temp dir). Every other line is copied unchanged.
    """
    lines = [f"# Generated by tests/support/broker.py from the shipped config.\nuser {run_as}"]
    pending = dict(overrides)
    listeners = 0
    for key, value in parse_directives(shipped):
        if key == "listener":
            listeners += 1
            lines.append(f"listener {port} {_HOST}")
        elif key == "user":
            continue
        elif key in paths:
            lines.append(f"{key} {paths[key]}")
        elif key in pending:
            lines.append(f"{key} {pending.pop(key)}")
        else:
            lines.append(f"{key} {value}")
    if listeners != 1:
        raise ValueError(f"expected exactly one listener in the shipped config, got {listeners}")
    lines.extend(f"{key} {value}" for key, value in pending.items())
    return "\n".join(lines) + "\n"


class MosquittoBroker:
    """One mosquitto process on 127.0.0.1 with an ephemeral port chosen at first start.

    `kind` selects the shipped config: "plain" (anonymous), "auth" (password
    file with `TEST_USERS` + mosquitto/acl) or "tls" (needs `certs`;
    `require_certificate=True` for mutual TLS). `max_inflight_messages`
    overrides the shipped value (None keeps it; `DEFAULT_MAX_INFLIGHT`
    reproduces mosquitto's built-in default).
    """

    host = _HOST

    def __init__(
        self,
        workdir: Path,
        kind: BrokerKind = "plain",
        *,
        certs: CertBundle | None = None,
        require_certificate: bool = False,
        max_inflight_messages: int | None = None,
    ) -> None:
        if kind == "tls" and certs is None:
            raise ValueError("a TLS broker needs certs (tests.support.certs.generate_certs)")
        if require_certificate and kind != "tls":
            raise ValueError("require_certificate only applies to the TLS broker")
        self.kind: BrokerKind = kind
        self.certs = certs
        self.require_certificate = require_certificate
        self.users: Mapping[str, str] = TEST_USERS if kind == "auth" else {}
        self.workdir = workdir
        self.config_path = workdir / "mosquitto.conf"
        # mosquitto's own log (log_dest file: flushed per line, readable while it
        # runs) and the process's stdout/stderr (config errors before logging starts).
        self.log_path = workdir / "mosquitto.log"
        self.console_path = workdir / "mosquitto.console"
        self._binary = find_mosquitto()
        self._overrides = self._collect_overrides(max_inflight_messages)
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "data").mkdir(exist_ok=True)
        if kind == "auth":
            self._write_password_file()

    # ----------------------------------------------------------------- state

    @property
    def port(self) -> int:
        """The listener port (fixed after the first successful start)."""
        if self._port is None:
            raise RuntimeError("broker has not been started")
        return self._port

    @property
    def pid(self) -> int | None:
        """PID of the running mosquitto, or None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the mosquitto process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """Everything mosquitto has logged so far (all runs), console output first."""
        if self._console is not None:
            self._console.flush()
        parts = []
        for path in (self.console_path, self.log_path):
            try:
                parts.append(path.read_text(errors="replace"))
            except FileNotFoundError:
                continue
        return "".join(parts)

    # ------------------------------------------------------------- lifecycle

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Start mosquitto and return once its port accepts TCP connections.

        The first start picks a free port (retrying on a bind race); later
        starts reuse it. Raises `BrokerStartError` with mosquitto's log if it
        exits or does not listen within `timeout` seconds.
        """
        starting("mosquitto")
        if self.running:
            raise RuntimeError("broker is already running")
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            port = self._port if self._port is not None else _free_port()
            self._spawn(port)
            failure = self._wait_listening(port, deadline)
            if failure is None:
                self._port = port
                return
            self._reap()
            bind_race = "Address already in use" in failure
            if not bind_race or time.monotonic() >= deadline:
                raise BrokerStartError(failure)
            if self._port is None and attempt >= _BIND_ATTEMPTS:
                raise BrokerStartError(failure)
            # Back off before retrying: whoever holds the port is outside our control.
            time.sleep(0.1)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Terminate mosquitto (SIGTERM, then SIGKILL after `timeout`) and reap it."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL mosquitto (a crash: nothing is saved) and reap it."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._reap()

    def restart(self, timeout: float = _START_TIMEOUT) -> None:
        """Graceful stop then start on the same port."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MosquittoBroker(kind={self.kind!r}, port={self._port}, pid={self.pid})"

    # --------------------------------------------------------------- helpers

    def _collect_overrides(self, max_inflight_messages: int | None) -> dict[str, str]:
        overrides: dict[str, str] = {}
        if max_inflight_messages is not None:
            overrides["max_inflight_messages"] = str(max_inflight_messages)
        if self.kind == "tls":
            overrides["require_certificate"] = "true" if self.require_certificate else "false"
        return overrides

    def _paths(self) -> dict[str, str]:
        paths = {
            "persistence_location": f"{self.workdir / 'data'}/",
            "log_dest": f"file {self.log_path}",
        }
        if self.kind == "auth":
            paths["password_file"] = str(self.workdir / "passwd")
            paths["acl_file"] = str(SHIPPED_ACL)
        if self.certs is not None:
            paths["cafile"] = str(self.certs.ca_cert)
            paths["certfile"] = str(self.certs.server_cert)
            paths["keyfile"] = str(self.certs.server_key)
        return paths

    def _write_config(self, port: int) -> None:
        text = render_test_config(
            SHIPPED_CONFIGS[self.kind].read_text(),
            port=port,
            paths=self._paths(),
            overrides=self._overrides,
            run_as=pwd.getpwuid(os.getuid()).pw_name,
        )
        self.config_path.write_text(text)

    def _write_password_file(self) -> None:
        passwd = find_mosquitto("mosquitto_passwd")
        path = self.workdir / "passwd"
        create = ["-c"]
        for user, password in self.users.items():
            subprocess.run(
                [passwd, *create, "-b", str(path), user, password],
                check=True,
                capture_output=True,
            )
            create = []

    def _spawn(self, port: int) -> None:
        self._write_config(port)
        with self.log_path.open("a") as log:
            log.write(f"--- starting mosquitto on {_HOST}:{port} ---\n")
        self._console = self.console_path.open("ab")
        self._proc = subprocess.Popen(
            [self._binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
        )

    def _wait_listening(self, port: int, deadline: float) -> str | None:
        """Poll the port until it accepts; return None, or a failure text with the log."""
        proc = self._proc
        assert proc is not None
        while True:
            if proc.poll() is not None:
                return f"mosquitto exited with {proc.returncode}:\n{self.log_text()}"
            try:
                with socket.create_connection((_HOST, port), timeout=0.5):
                    pass
            except OSError:
                pass
            else:
                if proc.poll() is None:
                    return None
            if time.monotonic() >= deadline:
                return f"mosquitto did not listen on {_HOST}:{port} in time:\n{self.log_text()}"
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(_PROBE_INTERVAL)  # wakes early if mosquitto exits

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._console is not None:
            self._console.close()
            self._console = None


def _free_port() -> int:
    """Return a port the kernel just handed out (it may be taken again: callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port
