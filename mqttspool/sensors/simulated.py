"""A deterministic fake sensor: the default when nothing is configured.

Values are smooth functions of a read counter (a slow daily-like wave) plus
small noise from a seeded generator, so two runs with the same seed produce
the same series and tests can assert exact values.
"""

from __future__ import annotations

import logging
import math
import random

from mqttspool.sensors.base import BaseSensor, Measurement

logger = logging.getLogger(__name__)

PERIOD_READS = 360  # one full wave every 360 reads (an hour at 10 s)


class SimulatedSensor(BaseSensor):
    """Temperature (°C) and humidity (%RH) that drift smoothly; seeded noise."""

    def __init__(self, name: str, interval: float, seed: int = 0) -> None:
        super().__init__(name, interval)
        self.seed = seed
        self._rng = random.Random(seed)
        self._count = 0

    def read(self) -> list[Measurement]:
        """The next point of the series."""
        phase = 2 * math.pi * self._count / PERIOD_READS
        self._count += 1
        temperature = 21.0 + 3.0 * math.sin(phase) + self._rng.gauss(0.0, 0.05)
        humidity = 45.0 - 10.0 * math.sin(phase) + self._rng.gauss(0.0, 0.2)
        return [
            Measurement("temperature", round(temperature, 3), "°C"),
            Measurement("humidity", round(min(100.0, max(0.0, humidity)), 3), "%RH"),
        ]
