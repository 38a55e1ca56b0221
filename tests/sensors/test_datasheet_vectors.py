"""Datasheet test vectors from shared/reference/SENSORS.md, as exact unit tests.

Tolerances are stated in each assert: ``abs=1e-6`` (or tighter) where the
reference gives the double-precision result of the same formula.
"""

from __future__ import annotations

import pytest

from mqttspool.sensors import ads1115, bh1750, bme280, htu21d, sht
from mqttspool.sensors.crc import HTU21D_INIT, crc8, crc8_maxim
from mqttspool.sensors.ds18b20 import parse_w1_slave

A_CALIB = bytes.fromhex("706B436718FC7D8E43D6D00B270B8C00F9FF8C3CF8C670170000")
A_DATA = bytes.fromhex("655AC07EED008000")
B_CALIB = bytes.fromhex("696D36643200E99802D6D00B231688FFF9FF8C3CF8C67017004B")
B_CALIB_H = bytes.fromhex("780100112E031E")
B_DATA = bytes.fromhex("4FCA008132707649")


@pytest.mark.parametrize(
    ("data", "init", "expected"),
    [
        ("BEEF", 0xFF, 0x92),
        ("6666", 0xFF, 0x93),
        ("8000", 0xFF, 0xA2),
        ("3333", 0xFF, 0x88),
        ("0000", 0xFF, 0x81),
        ("FFFF", 0xFF, 0xAC),
        ("DC", HTU21D_INIT, 0x79),
        ("683A", HTU21D_INIT, 0x7C),
        ("7C82", HTU21D_INIT, 0x97),
        ("4E85", HTU21D_INIT, 0x6B),
        ("7C80", HTU21D_INIT, 0xF5),
        ("0000", HTU21D_INIT, 0x00),
        ("FFFF", HTU21D_INIT, 0x2D),
    ],
)
def test_crc8_vectors(data: str, init: int, expected: int) -> None:
    assert crc8(bytes.fromhex(data), init=init) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("72014b467fff0e10", 0x57),
        ("50054b467fff0c10", 0x1C),
        ("ffffffffffffffff", 0xC9),
        ("0000000000000000", 0x00),
        ("021CB801000000", 0xA2),
        ("72014b467fff0e1057", 0x00),
    ],
)
def test_maxim_crc_vectors(data: str, expected: int) -> None:
    assert crc8_maxim(bytes.fromhex(data)) == expected


def test_bme280_vector_a_calibration_and_adc() -> None:
    c = bme280.parse_calibration(A_CALIB)
    assert (c.T1, c.T2, c.T3) == (27504, 26435, -1000)
    assert (c.P1, c.P2, c.P3, c.P4, c.P5, c.P6, c.P7, c.P8, c.P9) == (
        36477,
        -10685,
        3024,
        2855,
        140,
        -7,
        15500,
        -14600,
        6000,
    )
    assert bme280.parse_data(A_DATA) == (519888, 415148, 0x8000)


def test_bme280_vector_a_compensation() -> None:
    c = bme280.parse_calibration(A_CALIB)
    t, t_fine = bme280.compensate_temperature(519888, c)
    assert t == pytest.approx(25.082478, abs=1e-6)
    assert int(t_fine) == 128422
    # Float t_fine (the driver's path) and the datasheet's int t_fine, each to 1e-4 Pa.
    assert bme280.compensate_pressure(415148, t_fine, c) == pytest.approx(100653.2668, abs=1e-4)
    assert bme280.compensate_pressure(415148, int(t_fine), c) == pytest.approx(
        100653.2581, abs=1e-4
    )


def test_bme280_vector_b_library_values() -> None:
    c = bme280.parse_calibration(B_CALIB, B_CALIB_H)
    assert (c.H1, c.H2, c.H3, c.H4, c.H5, c.H6) == (75, 376, 0, 286, 50, 30)
    adc_t, adc_p, adc_h = bme280.parse_data(B_DATA)
    assert (adc_t, adc_p, adc_h) == (529191, 326816, 30281)
    assert adc_h is not None
    t, t_fine = bme280.compensate_temperature(adc_t, c)
    # The reference's float-t_fine row, abs <= 1e-6 as it suggests.
    assert t == pytest.approx(24.7894877676, abs=1e-6)
    assert bme280.compensate_pressure(adc_p, t_fine, c) / 100 == pytest.approx(
        1006.61517564, abs=1e-6
    )
    assert bme280.compensate_humidity(adc_h, t_fine, c) == pytest.approx(
        68.66996648709039, abs=1e-6
    )


def test_bme280_h4_h5_are_signed_12_bit() -> None:
    c = bme280.parse_calibration(B_CALIB, bytes.fromhex("780100F9ECFC1E"))
    assert (c.H4, c.H5) == (-100, -50)


def test_bme280_measurement_time() -> None:
    assert bme280.max_measurement_s(1, 1, 1) == pytest.approx(0.0093, abs=1e-12)
    assert bme280.max_measurement_s(16, 16, 16) == pytest.approx(0.1128, abs=1e-12)
    assert bme280.max_measurement_s(1, 4, 0) == pytest.approx(0.013325, abs=1e-12)


@pytest.mark.parametrize(
    ("frame", "t", "rh3", "rh4"),
    [
        ("666693800 0A2", 25.0, 50.000763, 56.500954),
        ("333388333388", -10.0, 20.0, 19.0),
    ],
)
def test_sht_frames(frame: str, t: float, rh3: float, rh4: float) -> None:
    raw_t, raw_rh = sht.decode_frame(bytes.fromhex(frame.replace(" ", "")))
    assert sht.sht_temperature(raw_t) == pytest.approx(t, abs=1e-6)
    assert sht.sht3x_humidity(raw_rh) == pytest.approx(rh3, abs=1e-6)
    assert sht.sht4x_humidity(raw_rh) == pytest.approx(rh4, abs=1e-6)


@pytest.mark.parametrize("frame", ["666692800 0A2", "FFFFFFFFFFFF", "000000000000"])
def test_sht_crc_errors(frame: str) -> None:
    with pytest.raises(ValueError, match="CRC mismatch"):
        sht.decode_frame(bytes.fromhex(frame.replace(" ", "")))


def test_sht_crc_error_names_expected_and_got() -> None:
    with pytest.raises(ValueError, match=r"expected 0x93, got 0x92"):
        sht.decode_frame(bytes.fromhex("66669280 00A2"))


def test_sht4x_humidity_is_cropped() -> None:
    assert sht.sht4x_humidity(0xFFFF) == 100.0
    assert sht.sht4x_humidity(0x0C49) == 0.0
    assert sht.sht_temperature(0xFFFF) == pytest.approx(130.0, abs=1e-9)


def test_htu21d_vectors() -> None:
    # 0x683A carries humidity status bits, so it is used as a conversion vector only.
    assert htu21d.htu_temperature(0x683A & 0xFFFC) == pytest.approx(24.6864, abs=1e-4)
    assert htu21d.htu_humidity(htu21d.decode_htu_frame(bytes.fromhex("7C8297"), True)) == (
        pytest.approx(54.7910, abs=1e-4)
    )
    # 4E 85 is the datasheet's "32.3 %RH" CRC example, but bit 1 is clear: conversion only.
    assert htu21d.htu_humidity(0x4E85 & 0xFFFC) == pytest.approx(32.3377, abs=1e-4)


@pytest.mark.parametrize(
    ("frame", "humidity", "message"),
    [
        ("000000", False, "all-zero"),
        ("FFFFFF", True, "CRC mismatch"),
        ("7C8297", False, "status bits"),
    ],
)
def test_htu21d_rejects(frame: str, humidity: bool, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        htu21d.decode_htu_frame(bytes.fromhex(frame), humidity)


def test_bh1750_vectors() -> None:
    assert bh1750.lux(0x8390) == pytest.approx(28066.6667, abs=1e-4)
    assert bh1750.lux(0x8390, "high2") == pytest.approx(14033.3333, abs=1e-4)
    assert bh1750.lux(0x8390, "high", 138) == pytest.approx(14033.3333, abs=1e-4)
    assert bh1750.mtreg_opcodes(69) == (0x42, 0x65)


def test_ads1115_config_word_and_codes() -> None:
    assert ads1115.config_word(0, 4.096, 128) == 0xC383
    for wire, volts in (("4000", 2.048), ("1234", 0.5825), ("FFFF", -0.000125)):
        code = int.from_bytes(bytes.fromhex(wire), "big", signed=True)
        assert ads1115.code_to_volts(code, 4.096) == pytest.approx(volts, abs=1e-9)


def _w1(first: str, t: int) -> str:
    return f"{first} : crc={first.rsplit(maxsplit=1)[-1]} YES\n{first} t={t}\n"


@pytest.mark.parametrize(
    ("scratch", "t", "celsius"),
    [
        ("72 01 4b 46 7f ff 0e 10 57", 23125, 23.125),
        ("5e ff 4b 46 7f ff 02 10 b6", -10125, -10.125),
        ("8f 01 55 00 7f ff 0c 10 a0", 24937, 24.9375),
        ("00 00 4b 46 7f ff 10 10 69", 0, 0.0),
        ("d0 07 4b 46 7f ff 10 10 55", 125000, 125.0),
        ("90 fc 4b 46 7f ff 10 10 ee", -55000, -55.0),
    ],
)
def test_ds18b20_good_files(scratch: str, t: int, celsius: float) -> None:
    assert parse_w1_slave(_w1(scratch, t))[0] == celsius


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_w1("50 05 4b 46 7f ff 0c 10 1c", 85000), "power-on"),
        (
            "ff ff ff ff ff ff ff ff ff : crc=c9 NO\n72 01 4b 46 7f ff 0e 10 57 t=-62\n",
            "CRC error",
        ),
        (_w1("00 00 00 00 00 00 00 00 00", 0), "invalid scratchpad"),
        ("", "empty read"),
    ],
)
def test_ds18b20_rejects(content: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_w1_slave(content)
