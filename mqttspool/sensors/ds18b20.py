"""DS18B20 temperature over the Linux 1-Wire sysfs interface (``w1-gpio`` + ``w1_therm``).

Reading ``w1_slave`` triggers a conversion and blocks (up to 750 ms at 12
bit). The file has two lines: the scratchpad read now with the kernel's CRC
verdict (``YES``/``NO``), then the last good bytes and ``t=``. The value is
computed from the current bytes (exact 1/16 °C, e.g. 24.9375 where ``t=``
shows the truncated 24937). Rejected: missing file, empty read (newer kernels
after repeated CRC failures), ``NO``, the all-zero scratchpad (passes the CRC),
the 85 °C power-on value (``50 05`` with byte6 0x0c) and values outside
-55..125 °C.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mqttspool.sensors.base import BaseSensor, Measurement
from mqttspool.sensors.crc import crc8_maxim, hex_bytes

logger = logging.getLogger(__name__)

DEVICES_DIR = "/sys/bus/w1/devices"
FAMILY_GLOB = "28-*"
POWER_ON_BYTES = (0x50, 0x05)
POWER_ON_BYTE6 = 0x0C
CONFIG_MASK = 0x9F
CONFIG_FIXED = 0x1F
WIRING_HINT = "check dtoverlay=w1-gpio in config.txt, wiring and the 4.7 kΩ pull-up"


def parse_w1_slave(text: str) -> tuple[float, bytes]:
    """(°C, scratchpad) from ``w1_slave`` content; ValueError naming the problem."""
    lines = text.strip().splitlines()
    if not lines:
        raise ValueError("empty read: the kernel gave up after CRC or conversion errors")
    first = lines[0].strip()
    if not first.endswith("YES"):
        raise ValueError(f"CRC error reported by the kernel ({first!r})")
    try:
        scratch = bytes(int(x, 16) for x in first.split(":")[0].split())
    except ValueError as exc:
        raise ValueError(f"unreadable scratchpad ({first!r})") from exc
    if len(scratch) != 9:
        raise ValueError(f"scratchpad has {len(scratch)} bytes, expected 9 ({first!r})")
    if crc8_maxim(scratch) != 0:
        raise ValueError(f"CRC mismatch in scratchpad {hex_bytes(scratch)}")
    if scratch[4] & CONFIG_MASK != CONFIG_FIXED:
        raise ValueError(
            f"invalid scratchpad {hex_bytes(scratch)} (config byte 0x{scratch[4]:02x};"
            " all-zero reads mean a bus fault)"
        )
    if (scratch[0], scratch[1]) == POWER_ON_BYTES and scratch[6] == POWER_ON_BYTE6:
        raise ValueError(
            "85 °C power-on value (no conversion happened: brown-out or parasite power)"
        )
    raw = int.from_bytes(scratch[0:2], "little", signed=True)
    return raw / 16.0, scratch


class Ds18b20Sensor(BaseSensor):
    """Temperature (°C) from one DS18B20 (``device_id``, ``path`` or the only one present)."""

    def __init__(
        self,
        name: str,
        interval: float,
        device_id: str | None = None,
        path: str | None = None,
        devices_dir: str = DEVICES_DIR,
    ) -> None:
        super().__init__(name, interval)
        self.devices_dir = Path(devices_dir)
        if path:
            self.path: Path | None = Path(path)
        elif device_id:
            self.path = self.devices_dir / device_id / "w1_slave"
        else:
            self.path = None  # found at read time

    def resolve(self) -> Path:
        """The ``w1_slave`` file to read."""
        if self.path is not None:
            return self.path
        found = sorted(self.devices_dir.glob(FAMILY_GLOB))
        if len(found) == 1:
            return found[0] / "w1_slave"
        if not found:
            raise self.error(f"no DS18B20 (28-*) under {self.devices_dir}: {WIRING_HINT}")
        names = ", ".join(p.name for p in found)
        raise self.error(f"several DS18B20 found ({names}): set device_id")

    def read(self) -> list[Measurement]:
        """One conversion (blocks up to ~750 ms)."""
        path = self.resolve()
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError as exc:
            raise self.error(
                f"sensor not present: {path} does not exist ({WIRING_HINT})", 2
            ) from exc
        except OSError as exc:
            raise self.error(f"cannot read {path}: {exc.strerror or exc}", exc.errno) from exc
        try:
            celsius, scratch = parse_w1_slave(text)
        except ValueError as exc:
            raise self.error(f"{path}: {exc}") from exc
        self.check_range("temperature °C", celsius, -55.0, 125.0, hex_bytes(scratch))
        return [Measurement("temperature", celsius, "°C")]
