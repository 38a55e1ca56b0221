"""Bosch BME280 (temperature, pressure, humidity) and BMP280 (no humidity) over I2C.

Forced mode: each read writes ctrl_meas, waits the datasheet's maximum
measurement time, polls the ``measuring`` bit and burst-reads the data so T,
P and H come from one conversion. Compensation is the datasheet's double
precision code keeping the float ``t_fine`` (as pimoroni and Adafruit do).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from mqttspool.errors import SensorError
from mqttspool.sensors.base import Measurement, Sleep
from mqttspool.sensors.crc import hex_bytes
from mqttspool.sensors.i2c import I2CDevice, I2CSensor

logger = logging.getLogger(__name__)

REG_CALIB_TP = 0x88  # 26 bytes: 0x88..0xA1 (0xA1 = dig_H1)
REG_CALIB_H = 0xE1  # 7 bytes: 0xE1..0xE7
REG_CHIP_ID = 0xD0
REG_RESET = 0xE0
REG_CTRL_HUM = 0xF2
REG_STATUS = 0xF3
REG_CTRL_MEAS = 0xF4
REG_CONFIG = 0xF5
REG_DATA = 0xF7
RESET_WORD = 0xB6
STATUS_MEASURING = 0x08
STATUS_IM_UPDATE = 0x01
MODE_FORCED = 0x01
CHIP_BME280 = 0x60
CHIPS_BMP280 = (0x56, 0x57, 0x58)
SKIPPED_20BIT = 0x80000
SKIPPED_16BIT = 0x8000
OSRS_CODE = {1: 1, 2: 2, 4: 3, 8: 4, 16: 5}
STATUS_POLLS = 10
STATUS_POLL_S = 0.002
RESET_WAIT_S = 0.004


@dataclass(frozen=True)
class Calibration:
    """Trimming parameters read from the chip's NVM (H* are None on a BMP280)."""

    T1: int
    T2: int
    T3: int
    P1: int
    P2: int
    P3: int
    P4: int
    P5: int
    P6: int
    P7: int
    P8: int
    P9: int
    H1: int | None = None
    H2: int | None = None
    H3: int | None = None
    H4: int | None = None
    H5: int | None = None
    H6: int | None = None


def _s8(b: int) -> int:
    return b - 0x100 if b & 0x80 else b


def parse_calibration(tp: bytes, hum: bytes | None = None) -> Calibration:
    """Decode 26 bytes from 0x88 and (BME280) 7 bytes from 0xE1; H4/H5 are signed 12-bit."""
    names = ("T1", "T2", "T3", "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9")
    values: dict[str, int] = dict(zip(names, struct.unpack("<HhhHhhhhhhhh", tp[:24]), strict=True))
    if hum is None:
        return Calibration(**values)
    return Calibration(
        **values,
        H1=tp[25],
        H2=struct.unpack("<h", hum[0:2])[0],
        H3=hum[2],
        H4=(_s8(hum[3]) * 16) | (hum[4] & 0x0F),
        H5=(_s8(hum[5]) * 16) | (hum[4] >> 4),
        H6=_s8(hum[6]),
    )


def parse_data(data: bytes) -> tuple[int, int, int | None]:
    """(adc_T, adc_P, adc_H) from the burst read at 0xF7 (adc_H None for 6 bytes)."""
    adc_p = (data[0] << 12) | (data[1] << 4) | (data[2] >> 4)
    adc_t = (data[3] << 12) | (data[4] << 4) | (data[5] >> 4)
    adc_h = (data[6] << 8) | data[7] if len(data) >= 8 else None
    return adc_t, adc_p, adc_h


def compensate_temperature(adc_t: int, c: Calibration) -> tuple[float, float]:
    """(°C, t_fine) by the datasheet's double-precision formula; t_fine kept as float."""
    var1 = (adc_t / 16384.0 - c.T1 / 1024.0) * c.T2
    var2 = ((adc_t / 131072.0 - c.T1 / 8192.0) ** 2) * c.T3
    return (var1 + var2) / 5120.0, var1 + var2


def compensate_pressure(adc_p: int, t_fine: float, c: Calibration) -> float:
    """Pressure in Pa (datasheet double precision); 0.0 on the division guard."""
    v1 = t_fine / 2.0 - 64000.0
    v2 = v1 * v1 * c.P6 / 32768.0
    v2 = v2 + v1 * c.P5 * 2.0
    v2 = v2 / 4.0 + c.P4 * 65536.0
    v1 = (c.P3 * v1 * v1 / 524288.0 + c.P2 * v1) / 524288.0
    v1 = (1.0 + v1 / 32768.0) * c.P1
    if v1 == 0.0:
        return 0.0
    p = 1048576.0 - adc_p
    p = (p - v2 / 4096.0) * 6250.0 / v1
    v1 = c.P9 * p * p / 2147483648.0
    v2 = p * c.P8 / 32768.0
    return p + (v1 + v2 + c.P7) / 16.0


def compensate_humidity(adc_h: int, t_fine: float, c: Calibration) -> float:
    """Relative humidity in %, clamped to 0..100 as the datasheet does."""
    assert c.H1 is not None and c.H2 is not None and c.H3 is not None
    assert c.H4 is not None and c.H5 is not None and c.H6 is not None
    h = t_fine - 76800.0
    h = (adc_h - (c.H4 * 64.0 + c.H5 / 16384.0 * h)) * (
        c.H2 / 65536.0 * (1.0 + c.H6 / 67108864.0 * h * (1.0 + c.H3 / 67108864.0 * h))
    )
    h = h * (1.0 - c.H1 * h / 524288.0)
    return min(100.0, max(0.0, h))


def max_measurement_s(osrs_t: int, osrs_p: int, osrs_h: int) -> float:
    """Datasheet appendix B maximum measurement time (0 = channel skipped)."""
    ms = 1.25 + 2.3 * osrs_t
    ms += 2.3 * osrs_p + 0.575 if osrs_p else 0.0
    ms += 2.3 * osrs_h + 0.575 if osrs_h else 0.0
    return ms / 1000.0


class Bme280Sensor(I2CSensor):
    """BME280 (``humidity=True``) or BMP280 in forced mode."""

    def __init__(
        self,
        name: str,
        interval: float,
        device: I2CDevice,
        humidity: bool = True,
        oversampling: int = 1,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(name, interval, device, sleep)
        self.humidity = humidity
        self.oversampling = oversampling
        self._calibration: Calibration | None = None

    def read(self) -> list[Measurement]:
        """One forced-mode conversion: temperature, pressure (and humidity)."""
        try:
            if self._calibration is None:
                self._calibration = self._initialise()
            return self._measure(self._calibration)
        except SensorError:
            self._calibration = None  # re-initialise after any fault (the chip may have reset)
            raise

    def close(self) -> None:
        """Close the bus; the next read re-initialises the chip."""
        self._calibration = None
        super().close()

    def _initialise(self) -> Calibration:
        chip = self.device.read_byte_data(REG_CHIP_ID)
        self._check_chip(chip)
        self.device.write_byte_data(REG_RESET, RESET_WORD)
        self._sleep(RESET_WAIT_S)
        self._wait_status(STATUS_IM_UPDATE, "NVM copy after reset")
        tp = self.device.read_block(REG_CALIB_TP, 26)
        hum = self.device.read_block(REG_CALIB_H, 7) if self.humidity else None
        if all(b == 0 for b in tp[:24]) or all(b == 0xFF for b in tp[:24]):
            raise self.error(f"calibration data is blank ({hex_bytes(tp[:6])} ...): bad read")
        cal = parse_calibration(tp, hum)
        if cal.T1 == 0:
            raise self.error("calibration dig_T1 is 0: bad read or not a Bosch sensor")
        if self.humidity:
            # ctrl_hum takes effect only with the next ctrl_meas write, so it goes first.
            self.device.write_byte_data(REG_CTRL_HUM, OSRS_CODE[self.oversampling])
        self.device.write_byte_data(REG_CONFIG, 0x00)  # filter off, written while asleep
        logger.debug("sensor %s: chip 0x%02x initialised", self.name, chip)
        return cal

    def _check_chip(self, chip: int) -> None:
        if self.humidity and chip in CHIPS_BMP280:
            raise self.error(f'chip id 0x{chip:02x} is a BMP280 (no humidity): set type = "bmp280"')
        if chip != CHIP_BME280 and chip not in CHIPS_BMP280:
            raise self.error(
                f"unexpected chip id 0x{chip:02x} at 0x{self.device.address:02x}"
                " (BME280 is 0x60, BMP280 0x56-0x58): wrong device or address"
            )

    def _wait_status(self, bit: int, what: str) -> None:
        for _ in range(STATUS_POLLS):
            if not self.device.read_byte_data(REG_STATUS) & bit:
                return
            self._sleep(STATUS_POLL_S)
        raise self.error(f"timed out waiting for {what} (status bit 0x{bit:02x} stuck)")

    def _measure(self, cal: Calibration) -> list[Measurement]:
        code = OSRS_CODE[self.oversampling]
        self.device.write_byte_data(REG_CTRL_MEAS, (code << 5) | (code << 2) | MODE_FORCED)
        osrs_h = self.oversampling if self.humidity else 0
        self._sleep(max_measurement_s(self.oversampling, self.oversampling, osrs_h))
        self._wait_status(STATUS_MEASURING, "the conversion")
        data = self.device.read_block(REG_DATA, 8 if self.humidity else 6)
        adc_t, adc_p, adc_h = parse_data(data)
        raw = hex_bytes(data)
        if SKIPPED_20BIT in (adc_t, adc_p) or adc_h == SKIPPED_16BIT:
            raise self.error(f"measurement skipped (reset values in data registers: {raw})")
        temperature, t_fine = compensate_temperature(adc_t, cal)
        pressure = compensate_pressure(adc_p, t_fine, cal)
        self.check_range("temperature °C", temperature, -40.0, 85.0, raw)
        self.check_range("pressure Pa", pressure, 30000.0, 110000.0, raw)
        out = [
            Measurement("temperature", temperature, "°C"),
            Measurement("pressure", pressure / 100.0, "hPa"),
        ]
        if adc_h is not None and self.humidity:
            out.append(Measurement("humidity", compensate_humidity(adc_h, t_fine, cal), "%RH"))
        return out
