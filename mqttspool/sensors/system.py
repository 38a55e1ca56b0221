"""Host metrics: 1-minute load, available memory, free disk space, uptime (Linux /proc)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mqttspool.sensors.base import BaseSensor, Measurement

logger = logging.getLogger(__name__)

PROC = "/proc"


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent (the spool directory may not exist yet)."""
    for candidate in (path, *path.absolute().parents):
        if candidate.exists():
            return candidate
    return path


class SystemSensor(BaseSensor):
    """``load1``, ``mem_available`` (B), ``disk_free`` (B, of ``disk_path``), ``uptime`` (s)."""

    def __init__(self, name: str, interval: float, disk_path: str = ".", proc: str = PROC) -> None:
        super().__init__(name, interval)
        self.disk_path = disk_path
        self.proc = Path(proc)

    def read(self) -> list[Measurement]:
        """Read all four metrics; any unreadable source fails the read."""
        try:
            load1 = float(self._read("loadavg").split()[0])
            uptime = float(self._read("uptime").split()[0])
            mem = self._mem_available(self._read("meminfo"))
            st = os.statvfs(existing_ancestor(Path(self.disk_path)))
        except OSError as exc:
            where = getattr(exc, "filename", None) or self.disk_path
            raise self.error(f"cannot read {where}: {exc.strerror or exc}", exc.errno) from exc
        except (ValueError, IndexError) as exc:
            raise self.error(f"unexpected /proc format: {exc}") from exc
        return [
            Measurement("load1", load1, None),
            Measurement("mem_available", float(mem), "B"),
            Measurement("disk_free", float(st.f_bavail * st.f_frsize), "B"),
            Measurement("uptime", uptime, "s"),
        ]

    def _read(self, name: str) -> str:
        return (self.proc / name).read_text(encoding="ascii")

    @staticmethod
    def _mem_available(meminfo: str) -> int:
        for line in meminfo.splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
        raise ValueError("MemAvailable missing from meminfo")
