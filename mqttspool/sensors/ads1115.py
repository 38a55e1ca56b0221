"""TI ADS1115 16-bit ADC over I2C: single-shot conversions, one per configured channel.

Each channel is single-ended (AINx to GND) with its own full-scale range
(PGA) and data rate; the voltage is optionally scaled linearly
(``value = volts * scale + offset``) into a named metric and unit, so e.g. a
capacitive soil-moisture probe reports ``soil_moisture`` in ``%``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from mqttspool.sensors.base import Measurement, Sleep
from mqttspool.sensors.crc import hex_bytes
from mqttspool.sensors.i2c import I2CDevice, I2CSensor

logger = logging.getLogger(__name__)

REG_CONVERSION = 0x00
REG_CONFIG = 0x01
OS_START = 0x8000
OS_IDLE = 0x80  # in the config MSB when read back
MODE_SINGLE = 0x0100
COMP_DISABLED = 0x0003
PGA_CODES = {6.144: 0, 4.096: 1, 2.048: 2, 1.024: 3, 0.512: 4, 0.256: 5}
DR_CODES = {8: 0, 16: 1, 32: 2, 64: 3, 128: 4, 250: 5, 475: 6, 860: 7}
READY_POLLS = 10
FULL_SCALE = (32767, -32768)


class Channel(Protocol):
    """What the driver needs of a channel's options (see the registry's AdsChannel)."""

    @property
    def channel(self) -> int:
        """AIN number 0..3."""
        ...

    @property
    def pga(self) -> float:
        """Full-scale range in volts."""
        ...

    @property
    def data_rate(self) -> int:
        """Samples per second."""
        ...

    @property
    def metric(self) -> str:
        """Metric name."""
        ...

    @property
    def unit(self) -> str:
        """Unit after scaling."""
        ...

    @property
    def scale(self) -> float:
        """Multiplier applied to volts."""
        ...

    @property
    def offset(self) -> float:
        """Added after scaling."""
        ...


def config_word(channel: int, pga: float, data_rate: int) -> int:
    """Config register for a single-shot conversion of AIN``channel`` against GND."""
    mux = 0x4 + channel
    return (
        OS_START
        | (mux << 12)
        | (PGA_CODES[pga] << 9)
        | MODE_SINGLE
        | (DR_CODES[data_rate] << 5)
        | COMP_DISABLED
    )


def code_to_volts(code: int, pga: float) -> float:
    """Signed conversion code to volts: code * FSR / 32768."""
    return code * pga / 32768.0


class Ads1115Sensor(I2CSensor):
    """One measurement per configured channel."""

    def __init__(
        self,
        name: str,
        interval: float,
        device: I2CDevice,
        channels: Sequence[Channel],
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(name, interval, device, sleep)
        self.channels = list(channels)

    def read(self) -> list[Measurement]:
        """Convert every channel in turn."""
        return [self._convert(ch) for ch in self.channels]

    def _convert(self, ch: Channel) -> Measurement:
        word = config_word(ch.channel, ch.pga, ch.data_rate)
        self.device.write_block(REG_CONFIG, [word >> 8, word & 0xFF])
        period = 1.0 / ch.data_rate
        self._sleep(period + 0.001)
        for _ in range(READY_POLLS):
            if self.device.read_block(REG_CONFIG, 2)[0] & OS_IDLE:
                break
            self._sleep(period / 4)
        else:
            raise self.error(f"AIN{ch.channel}: conversion did not finish (OS bit stayed 0)")
        data = self.device.read_block(REG_CONVERSION, 2)
        code = int.from_bytes(data, "big", signed=True)
        if code in FULL_SCALE:
            raise self.error(
                f"AIN{ch.channel}: over-range (raw {hex_bytes(data)}) at ±{ch.pga} V;"
                " choose a larger pga"
            )
        volts = code_to_volts(code, ch.pga)
        return Measurement(ch.metric, volts * ch.scale + ch.offset, ch.unit or None)
