"""Sensirion SHT3x and SHT4x humidity/temperature sensors over I2C.

Both use no-clock-stretching measurement commands (the Pi's I2C controller
mishandles clock stretching): the command and the read are two separate
``i2c_rdwr`` transactions with the conversion time slept in between. A read
issued too early is NACKed (errno 121) and retried a few times. Each 16-bit
word carries a CRC-8 (poly 0x31, init 0xFF); a mismatch is never returned.
"""

from __future__ import annotations

import errno
import logging

from mqttspool.errors import SensorError
from mqttspool.sensors.base import Measurement, Sleep
from mqttspool.sensors.crc import SENSIRION_INIT, crc8, hex_bytes
from mqttspool.sensors.i2c import I2CDevice, I2CSensor

logger = logging.getLogger(__name__)

# Single shot, no clock stretching: command word, maximum duration (s).
SHT3X_COMMANDS = {
    "high": (0x2400, 0.015),
    "medium": (0x240B, 0.006),
    "low": (0x2416, 0.004),
}
SHT4X_COMMANDS = {
    "high": (0xFD, 0.0083),
    "medium": (0xF6, 0.0045),
    "low": (0xE0, 0.0017),
}
MARGIN_S = 0.001
NOT_READY_RETRIES = 3
NOT_READY_WAIT_S = 0.002
FRAME_LEN = 6


def check_word_crc(frame: bytes, offset: int, what: str, init: int = SENSIRION_INIT) -> int:
    """The 16-bit word at ``offset`` if its CRC byte matches; raises ValueError otherwise."""
    word = frame[offset : offset + 2]
    expected = crc8(word, init=init)
    got = frame[offset + 2]
    if expected != got:
        raise ValueError(
            f"CRC mismatch on {what} word (expected 0x{expected:02x}, got 0x{got:02x};"
            f" raw {hex_bytes(frame)})"
        )
    return (word[0] << 8) | word[1]


def sht_temperature(raw: int) -> float:
    """T = -45 + 175 * S / 65535 (°C), SHT3x and SHT4x."""
    return -45.0 + 175.0 * raw / 65535.0


def sht3x_humidity(raw: int) -> float:
    """RH = 100 * S / 65535 (%)."""
    return 100.0 * raw / 65535.0


def sht4x_humidity(raw: int) -> float:
    """RH = -6 + 125 * S / 65535, cropped to 0..100 as the datasheet recommends."""
    return min(100.0, max(0.0, -6.0 + 125.0 * raw / 65535.0))


def decode_frame(frame: bytes) -> tuple[int, int]:
    """(S_T, S_RH) from a 6-byte frame with both CRCs checked (ValueError on mismatch)."""
    if len(frame) != FRAME_LEN:
        raise ValueError(f"short frame ({len(frame)} bytes)")
    return check_word_crc(frame, 0, "temperature"), check_word_crc(frame, 3, "humidity")


class _Sensirion(I2CSensor):
    """Command, wait, read (retrying a not-ready NACK), check CRCs, convert."""

    def _command_and_read(self, command: list[int], wait_s: float, length: int) -> bytes:
        self.device.write(command)
        self._sleep(wait_s + MARGIN_S)
        for attempt in range(NOT_READY_RETRIES + 1):
            try:
                return self.device.read(length)
            except SensorError as exc:
                if exc.errno != errno.EREMOTEIO or attempt == NOT_READY_RETRIES:
                    raise
                self._sleep(NOT_READY_WAIT_S)  # a no-hold sensor NACKs until it is done
        raise AssertionError("unreachable")  # pragma: no cover

    def _measurements(self, frame: bytes, rh: float, raw_t: int) -> list[Measurement]:
        temperature = self.check_range(
            "temperature °C", sht_temperature(raw_t), -40.0, 125.0, hex_bytes(frame)
        )
        return [
            Measurement("temperature", temperature, "°C"),
            Measurement("humidity", rh, "%RH"),
        ]

    def _decode(self, frame: bytes) -> tuple[int, int]:
        try:
            return decode_frame(frame)
        except ValueError as exc:
            raise self.error(str(exc)) from exc


class Sht3xSensor(_Sensirion):
    """SHT30/31/35: 16-bit single-shot command, no clock stretching."""

    def __init__(
        self,
        name: str,
        interval: float,
        device: I2CDevice,
        repeatability: str = "high",
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(name, interval, device, sleep)
        self.command, self.wait_s = SHT3X_COMMANDS[repeatability]

    def read(self) -> list[Measurement]:
        """Temperature (°C) and relative humidity (%RH)."""
        cmd = [self.command >> 8, self.command & 0xFF]
        frame = self._command_and_read(cmd, self.wait_s, FRAME_LEN)
        raw_t, raw_rh = self._decode(frame)
        return self._measurements(frame, sht3x_humidity(raw_rh), raw_t)


class Sht4xSensor(_Sensirion):
    """SHT40/41/43/45: 1-byte measure command."""

    def __init__(
        self,
        name: str,
        interval: float,
        device: I2CDevice,
        precision: str = "high",
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(name, interval, device, sleep)
        self.command, self.wait_s = SHT4X_COMMANDS[precision]

    def read(self) -> list[Measurement]:
        """Temperature (°C) and relative humidity (%RH, cropped to 0..100)."""
        frame = self._command_and_read([self.command], self.wait_s, FRAME_LEN)
        raw_t, raw_rh = self._decode(frame)
        return self._measurements(frame, sht4x_humidity(raw_rh), raw_t)
