"""ROHM BH1750 ambient light sensor over I2C (one-time measurement modes).

No registers: one opcode per write transaction (each followed by STOP),
then a separate 2-byte read, MSB first, no CRC. One-time modes power the
chip down after each measurement, which suits polling.
"""

from __future__ import annotations

import logging

from mqttspool.sensors.base import Measurement, Sleep
from mqttspool.sensors.crc import hex_bytes
from mqttspool.sensors.i2c import I2CDevice, I2CSensor

logger = logging.getLogger(__name__)

POWER_ON = 0x01
DEFAULT_MTREG = 69
SATURATED = 0xFFFF
# mode -> (one-time opcode, max measurement time at MTreg 69 in s, resolution divisor)
MODES = {
    "high": (0x20, 0.180, 1.0),
    "high2": (0x21, 0.180, 2.0),
    "low": (0x23, 0.024, 1.0),
}


def mtreg_opcodes(mtreg: int) -> tuple[int, int]:
    """The two opcodes that set the measurement-time register."""
    return 0x40 | (mtreg >> 5), 0x60 | (mtreg & 0x1F)


def lux(raw: int, mode: str = "high", mtreg: int = DEFAULT_MTREG) -> float:
    """lx = raw / 1.2 * (69 / MTreg), halved in H-resolution mode 2."""
    return raw / 1.2 * (DEFAULT_MTREG / mtreg) / MODES[mode][2]


class Bh1750Sensor(I2CSensor):
    """Illuminance in lux."""

    def __init__(
        self,
        name: str,
        interval: float,
        device: I2CDevice,
        mode: str = "high",
        mtreg: int = DEFAULT_MTREG,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(name, interval, device, sleep)
        self.mode = mode
        self.mtreg = mtreg

    def read(self) -> list[Measurement]:
        """One one-time measurement."""
        opcode, wait_s, _ = MODES[self.mode]
        self.device.write([POWER_ON])
        if self.mtreg != DEFAULT_MTREG:
            for op in mtreg_opcodes(self.mtreg):
                self.device.write([op])
        self.device.write([opcode])
        self._sleep(wait_s * max(1.0, self.mtreg / DEFAULT_MTREG))
        data = self.device.read(2)
        raw = (data[0] << 8) | data[1]
        if raw == SATURATED:
            raise self.error(
                f"saturated (raw {hex_bytes(data)}): too bright for MTreg {self.mtreg}"
            )
        return [Measurement("illuminance", lux(raw, self.mode, self.mtreg), "lx")]
