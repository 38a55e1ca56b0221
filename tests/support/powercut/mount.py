"""Mount, cut and remount the power-cut filesystem (:mod:`support.powercut.fs`) from a test.

Typical use (the ``powercut_mount`` fixture does the set-up)::

    fs = PowerCutMount(tmp_path / "pc")
    fs.mount()                       # fs.path: the mountpoint, an empty "disk"
    proc = subprocess.Popen([..., str(fs.path / "spool.db")])
    ...
    fs.cut(proc)                     # SIGSTOP proc, drop unsynced state, SIGKILL proc
    fs.mount()                       # the same disk after the reboot
    fs.unmount()

A cut freezes the victim first (SIGSTOP), so the process does nothing between
the moment the filesystem forgets its unsynced state and its death: the two
happen "at the same instant", as in a power failure.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["PowerCutMount", "PowerCutUnavailableError", "check_available"]

_TESTS_DIR = Path(__file__).resolve().parents[2]
_MOUNT_TIMEOUT = 15.0


class PowerCutUnavailableError(RuntimeError):
    """FUSE (``/dev/fuse``, ``fusermount3``, mfusepy, root) is not usable here."""


def check_available() -> None:
    """Raise :class:`PowerCutUnavailableError` naming what is missing."""
    if not os.path.exists("/dev/fuse"):
        raise PowerCutUnavailableError("/dev/fuse is missing (a container without --device)")
    if shutil.which("fusermount3") is None:
        raise PowerCutUnavailableError("fusermount3 is not installed (apt-get install fuse3)")
    try:
        import mfusepy  # noqa: F401, PLC0415
    except (ImportError, OSError) as exc:
        raise PowerCutUnavailableError(f"mfusepy unusable: {exc} (pip install mfusepy)") from exc
    if os.geteuid() != 0:
        raise PowerCutUnavailableError("the power-cut filesystem needs root to mount")


class PowerCutMount:
    """One "disk" (``root/durable``) mounted at ``root/mnt`` through the power-cut FS."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.durable = root / "durable"
        self.live = root / "live"
        self.path = root / "mnt"
        self.durable.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        self.cuts = 0
        self._server: subprocess.Popen[str] | None = None

    @property
    def mounted(self) -> bool:
        """True while a server is serving the mountpoint."""
        return self._server is not None

    def mount(self) -> None:
        """Start a fresh server: the mount shows exactly the durable state."""
        if self._server is not None:
            raise RuntimeError(f"{self.path} is already mounted")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_TESTS_DIR), *sys.path]))
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "support.powercut.fs",
                str(self.durable),
                str(self.live),
                str(self.path),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._server = server
        try:
            self._expect(server, "ready")
        except BaseException:
            self.unmount()
            raise

    def cut(
        self,
        *victims: subprocess.Popen[str] | subprocess.Popen[bytes],
        frozen: Callable[[], None] | None = None,
    ) -> None:
        """Power failure: freeze ``victims``, drop unsynced state, kill them, unmount.

        ``frozen`` runs while the victims are stopped and the filesystem still
        holds everything, e.g. to read what a process had committed at the cut.
        """
        for proc in victims:
            if proc.poll() is None:
                proc.send_signal(signal.SIGSTOP)
        if frozen is not None:
            frozen()
        self.cut_filesystem()
        self.finish_cut(*victims)

    def arm_cut_at_fsync(self, name: str, nth: int = 1) -> None:
        """Make the ``nth`` next fsync of a file called ``name`` a cut (see :meth:`wait_cut`)."""
        server = self._require_server()
        assert server.stdin is not None
        server.stdin.write(f"arm {name} {nth}\n")
        server.stdin.flush()
        self._expect(server, "armed")

    def wait_cut(self, timeout: float) -> None:
        """Wait until an armed cut happened (then call :meth:`finish_cut`).

        The victims keep running until then, but nothing they do reaches the disk.
        """
        self._expect(self._require_server(), "cut", timeout)

    def finish_cut(self, *victims: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
        """After the filesystem was cut: kill ``victims`` and unmount."""
        for proc in victims:
            if proc.poll() is None:
                proc.kill()
            proc.wait(15)
        self.cuts += 1
        self.unmount()

    def cut_filesystem(self) -> None:
        """Drop the unsynced state; every later operation on the mount fails with EIO.

        The mount stays until :meth:`unmount` (close every file on it first).
        """
        server = self._require_server()
        assert server.stdin is not None
        server.stdin.write("cut\n")
        server.stdin.flush()
        self._expect(server, "cut")

    def unmount(self) -> None:
        """Unmount (whatever was not synced is lost, as at a cut) and stop the server."""
        server = self._server
        if server is None:
            return
        self._server = None
        subprocess.run(
            ["fusermount3", "-u", "-z", str(self.path)], check=False, capture_output=True
        )
        try:
            server.wait(_MOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        for stream in (server.stdin, server.stdout):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.live, ignore_errors=True)

    def _require_server(self) -> subprocess.Popen[str]:
        if self._server is None:
            raise RuntimeError(f"{self.path} is not mounted")
        return self._server

    def _expect(
        self, server: subprocess.Popen[str], word: str, timeout: float = _MOUNT_TIMEOUT
    ) -> None:
        assert server.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([server.stdout], [], [], max(left, 0))
            if not ready:
                raise TimeoutError(f"power-cut FS at {self.path}: no {word!r} in {timeout} s")
            line = server.stdout.readline()
            if line == "":
                raise RuntimeError(f"power-cut FS at {self.path} exited (rc={server.wait(5)})")
            if line.strip() == word:
                return
