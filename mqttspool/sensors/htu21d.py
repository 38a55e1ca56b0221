"""HTU21D / Si7021 / SHT21 humidity and temperature over I2C (no-hold commands).

Each measurement is a 1-byte command, a wait, and a separate 3-byte read
(MSB, LSB, CRC with init 0x00). The two low bits are status bits (bit 1 set
for humidity) and are checked against the command, then masked. Because the
CRC init is 0, an all-zero frame passes the CRC; it is rejected explicitly.
"""

from __future__ import annotations

import errno
import logging

from mqttspool.errors import SensorError
from mqttspool.sensors.base import Measurement
from mqttspool.sensors.crc import HTU21D_INIT, crc8, hex_bytes
from mqttspool.sensors.i2c import I2CSensor

logger = logging.getLogger(__name__)

CMD_TEMPERATURE = 0xF3  # trigger T, no hold master
CMD_HUMIDITY = 0xF5  # trigger RH, no hold master
WAIT_TEMPERATURE_S = 0.050  # HTU21D max 50 ms, Si7021 10.8 ms
WAIT_HUMIDITY_S = 0.025  # HTU21D max 16 ms, Si7021 22.8 ms
NOT_READY_RETRIES = 5
NOT_READY_WAIT_S = 0.005
STATUS_HUMIDITY = 0x02


def decode_htu_frame(frame: bytes, humidity: bool) -> int:
    """The status-masked 16-bit value of a 3-byte frame; ValueError when it is not valid."""
    if len(frame) != 3:
        raise ValueError(f"short frame ({len(frame)} bytes)")
    if frame == b"\x00\x00\x00":
        raise ValueError("all-zero frame (passes the CRC, but no measurement)")
    expected = crc8(frame[:2], init=HTU21D_INIT)
    if expected != frame[2]:
        raise ValueError(
            f"CRC mismatch (expected 0x{expected:02x}, got 0x{frame[2]:02x};"
            f" raw {hex_bytes(frame)})"
        )
    if bool(frame[1] & STATUS_HUMIDITY) != humidity:
        kind = "humidity" if humidity else "temperature"
        raise ValueError(f"status bits do not match a {kind} measurement (raw {hex_bytes(frame)})")
    return ((frame[0] << 8) | frame[1]) & 0xFFFC


def htu_temperature(raw: int) -> float:
    """T = -46.85 + 175.72 * S / 65536 (°C), S status-masked."""
    return -46.85 + 175.72 * raw / 65536.0


def htu_humidity(raw: int) -> float:
    """RH = -6 + 125 * S / 65536, cropped to 0..100 (%)."""
    return min(100.0, max(0.0, -6.0 + 125.0 * raw / 65536.0))


class Htu21dSensor(I2CSensor):
    """HTU21D(F), Si7021 and compatible parts at 0x40."""

    def read(self) -> list[Measurement]:
        """Temperature (°C) and relative humidity (%RH)."""
        t_frame = self._measure(CMD_TEMPERATURE, WAIT_TEMPERATURE_S)
        temperature = htu_temperature(self._decode(t_frame, humidity=False))
        self.check_range("temperature °C", temperature, -40.0, 125.0, hex_bytes(t_frame))
        rh_frame = self._measure(CMD_HUMIDITY, WAIT_HUMIDITY_S)
        humidity = htu_humidity(self._decode(rh_frame, humidity=True))
        return [
            Measurement("temperature", temperature, "°C"),
            Measurement("humidity", humidity, "%RH"),
        ]

    def _decode(self, frame: bytes, humidity: bool) -> int:
        try:
            return decode_htu_frame(frame, humidity)
        except ValueError as exc:
            raise self.error(str(exc)) from exc

    def _measure(self, command: int, wait_s: float) -> bytes:
        self.device.write([command])
        self._sleep(wait_s)
        for attempt in range(NOT_READY_RETRIES + 1):
            try:
                return self.device.read(3)
            except SensorError as exc:
                if exc.errno != errno.EREMOTEIO or attempt == NOT_READY_RETRIES:
                    raise
                self._sleep(NOT_READY_WAIT_S)  # NACK while converting: poll by retrying
        raise AssertionError("unreachable")  # pragma: no cover
