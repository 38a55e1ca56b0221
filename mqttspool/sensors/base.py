"""What every sensor driver provides: a name, an interval and ``read()``.

A driver returns plain :class:`Measurement` values; the sampler adds the
device, sensor name and timestamp and turns them into readings. A failed
read raises :class:`mqttspool.errors.SensorError` carrying the sensor's name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mqttspool.errors import SensorError

logger = logging.getLogger(__name__)

Sleep = Callable[[float], None]


@dataclass(frozen=True, slots=True)
class Measurement:
    """One value a sensor produced: metric name, value and unit (None if unitless)."""

    metric: str
    value: float
    unit: str | None


@runtime_checkable
class Sensor(Protocol):
    """A configured sensor the sampler polls every ``interval`` seconds."""

    name: str
    interval: float

    def read(self) -> list[Measurement]:
        """Take one measurement; raises :class:`SensorError` on any failure."""
        ...

    def close(self) -> None:
        """Release the bus or file handles (the sensor may be read again later)."""
        ...


class BaseSensor:
    """Shared plumbing for drivers: name, interval, range checks, a no-op close."""

    def __init__(self, name: str, interval: float) -> None:
        self.name = name
        self.interval = interval

    def read(self) -> list[Measurement]:
        """Subclasses implement the actual read."""
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release by default."""

    def error(self, message: str, errno: int | None = None) -> SensorError:
        """A :class:`SensorError` naming this sensor."""
        return SensorError(self.name, message, errno)

    def check_range(self, what: str, value: float, low: float, high: float, raw: str) -> float:
        """Return ``value`` if ``low <= value <= high``, else raise an "implausible" error."""
        if not math.isfinite(value) or not low <= value <= high:
            raise self.error(
                f"implausible {what} {value:.3f} (expected {low:g}..{high:g}; raw {raw})"
            )
        return value
