"""Raspberry Pi SoC temperature from the thermal sysfs (millidegrees Celsius)."""

from __future__ import annotations

import logging
from pathlib import Path

from mqttspool.sensors.base import BaseSensor, Measurement

logger = logging.getLogger(__name__)

THERMAL_PATH = "/sys/class/thermal/thermal_zone0/temp"


class CpuTempSensor(BaseSensor):
    """``temperature`` in °C from a thermal zone's ``temp`` file."""

    def __init__(self, name: str, interval: float, path: str = THERMAL_PATH) -> None:
        super().__init__(name, interval)
        self.path = Path(path)

    def read(self) -> list[Measurement]:
        """Read and convert the zone's temperature."""
        try:
            text = self.path.read_text(encoding="ascii")
        except FileNotFoundError as exc:
            raise self.error(
                f"{self.path} does not exist (not a Raspberry Pi, or a container without"
                " /sys/class/thermal; set path to another thermal_zone*/temp)",
                exc.errno,
            ) from exc
        except OSError as exc:
            raise self.error(f"cannot read {self.path}: {exc.strerror or exc}", exc.errno) from exc
        try:
            millidegrees = int(text.strip())
        except ValueError as exc:
            raise self.error(f"{self.path}: not a number ({text.strip()!r})") from exc
        celsius = millidegrees / 1000.0
        self.check_range("temperature °C", celsius, -40.0, 125.0, text.strip())
        return [Measurement("temperature", celsius, "°C")]
