"""I2C drivers against the fake bus: one contract every driver passes, then per-chip details."""

from __future__ import annotations

import errno
from typing import ClassVar

import pytest
from fakes.smbus import (
    CommandDevice,
    FakeAds1115,
    FakeBme280,
    FakeDevice,
    FakeSMBus,
    SleepRecorder,
)

from mqttspool.errors import SensorError
from mqttspool.sensor_config import AdsChannel
from mqttspool.sensors.ads1115 import Ads1115Sensor
from mqttspool.sensors.base import BaseSensor, Measurement
from mqttspool.sensors.bh1750 import Bh1750Sensor
from mqttspool.sensors.bme280 import Bme280Sensor
from mqttspool.sensors.crc import HTU21D_INIT, crc8
from mqttspool.sensors.htu21d import Htu21dSensor
from mqttspool.sensors.i2c import I2CDevice, scan_bus
from mqttspool.sensors.sht import Sht3xSensor, Sht4xSensor

B_CALIB = bytes.fromhex("696D36643200E99802D6D00B231688FFF9FF8C3CF8C67017004B")
B_CALIB_H = bytes.fromhex("780100112E031E")
B_DATA = bytes.fromhex("4FCA008132707649")
SHT_FRAME = bytes.fromhex("666693800 0A2".replace(" ", ""))


def _htu_frame(word: int) -> bytes:
    data = word.to_bytes(2, "big")
    return data + bytes([crc8(data, init=HTU21D_INIT)])


Values = dict[str, tuple[float, str | None]]
HTU_T = _htu_frame(0x6838)  # 0x683A with the temperature status bits
HTU_RH = bytes.fromhex("7C8297")


def _values(ms: list[Measurement]) -> Values:
    return {m.metric: (round(m.value, 4), m.unit) for m in ms}


class I2CDriverContract:
    """Every I2C driver: reads through the fake, names itself on errno 121, recovers."""

    address = 0

    def make_device(self) -> FakeDevice:
        """The fake chip, in a state that yields ``expected``."""
        raise NotImplementedError

    def make_sensor(self, dev: I2CDevice, sleep: SleepRecorder) -> BaseSensor:
        """The driver under test."""
        raise NotImplementedError

    expected: ClassVar[Values] = {}

    def _setup(self) -> tuple[FakeSMBus, BaseSensor, SleepRecorder]:
        bus = FakeSMBus({self.address: self.make_device()})
        sleep = SleepRecorder()
        dev = I2CDevice("probe", 1, self.address, bus.factory)
        return bus, self.make_sensor(dev, sleep), sleep

    def test_reads_expected_values(self) -> None:
        bus, sensor, _ = self._setup()
        assert _values(sensor.read()) == self.expected
        assert bus.opened == [1]

    def test_absent_device_raises_errno_121_naming_the_sensor(self) -> None:
        bus, sensor, _ = self._setup()
        bus.devices.clear()
        with pytest.raises(SensorError) as info:
            sensor.read()
        assert info.value.sensor == "probe"
        assert info.value.errno == errno.EREMOTEIO
        assert f"no device answered at 0x{self.address:02x} on /dev/i2c-1" in str(info.value)
        assert str(info.value).startswith("sensor probe: ")

    def test_recovers_after_transient_faults(self) -> None:
        bus, sensor, _ = self._setup()
        device = bus.devices.pop(self.address)
        with pytest.raises(SensorError):
            sensor.read()
        bus.fail_next(self.address, 1, errno.EIO)
        bus.devices[self.address] = device
        with pytest.raises(SensorError) as info:
            sensor.read()
        assert info.value.errno == errno.EIO
        assert "I/O error" in str(info.value)
        assert _values(sensor.read()) == self.expected
        assert bus.closed == 2  # each fault closed the bus file; it was reopened

    def test_missing_bus_device_file(self) -> None:
        bus, sensor, _ = self._setup()
        bus.open_error = FileNotFoundError(errno.ENOENT, "No such file")
        with pytest.raises(SensorError, match="I2C not enabled") as info:
            sensor.read()
        assert info.value.sensor == "probe"

    def test_permission_denied(self) -> None:
        bus, sensor, _ = self._setup()
        bus.open_error = PermissionError(errno.EACCES, "Permission denied")
        with pytest.raises(SensorError, match="user not in the i2c group"):
            sensor.read()

    def test_address_owned_by_kernel_driver(self) -> None:
        bus, sensor, _ = self._setup()
        bus.fail_next(self.address, 1, errno.EBUSY)
        with pytest.raises(SensorError, match="a kernel driver owns it") as info:
            sensor.read()
        assert info.value.errno == errno.EBUSY


class TestBme280(I2CDriverContract):
    address = 0x76
    expected: ClassVar[Values] = {
        "temperature": (24.7895, "°C"),
        "pressure": (1006.6152, "hPa"),
        "humidity": (68.67, "%RH"),
    }

    def make_device(self) -> FakeBme280:
        return FakeBme280(0x60, B_CALIB, B_CALIB_H, B_DATA, busy_polls=2)

    def make_sensor(self, dev: I2CDevice, sleep: SleepRecorder) -> BaseSensor:
        return Bme280Sensor("probe", 10, dev, humidity=True, sleep=sleep)

    def test_register_sequence(self) -> None:
        bus, sensor, sleep = self._setup()
        sensor.read()
        chip = bus.devices[0x76]
        assert isinstance(chip, FakeBme280)
        writes = chip.register_writes
        assert writes == [(0xE0, 0xB6), (0xF2, 0x01), (0xF5, 0x00), (0xF4, 0x25)]
        assert sleep.calls[1] == pytest.approx(0.0093, abs=1e-12)  # max time for x1/x1/x1
        burst = [t for t in bus.log if t.register == 0xF7]
        assert [(t.op, len(t.read)) for t in burst] == [("read_i2c_block_data", 8)]
        sensor.read()
        assert chip.register_writes[4:] == [(0xF4, 0x25)]  # forced mode again, no re-init

    def test_bmp280_chip_as_bme280_is_refused(self) -> None:
        bus = FakeSMBus({0x76: FakeBme280(0x58, B_CALIB, B_CALIB_H, B_DATA)})
        sensor = Bme280Sensor("probe", 10, I2CDevice("probe", 1, 0x76, bus.factory))
        with pytest.raises(SensorError, match=r'is a BMP280 .*set type = "bmp280"'):
            sensor.read()

    def test_unknown_chip_id(self) -> None:
        bus = FakeSMBus({0x76: FakeBme280(0x61, B_CALIB, B_CALIB_H, B_DATA)})
        sensor = Bme280Sensor("probe", 10, I2CDevice("probe", 1, 0x76, bus.factory))
        with pytest.raises(SensorError, match="unexpected chip id 0x61"):
            sensor.read()

    def test_skipped_values_are_rejected(self) -> None:
        chip = FakeBme280(0x60, B_CALIB, B_CALIB_H, bytes.fromhex("8000008000008000"))
        bus = FakeSMBus({0x76: chip})
        sensor = Bme280Sensor(
            "probe", 10, I2CDevice("probe", 1, 0x76, bus.factory), sleep=SleepRecorder()
        )
        with pytest.raises(SensorError, match="measurement skipped"):
            sensor.read()

    def test_blank_calibration(self) -> None:
        chip = FakeBme280(0x60, bytes(26), B_CALIB_H, B_DATA)
        bus = FakeSMBus({0x76: chip})
        sensor = Bme280Sensor(
            "probe", 10, I2CDevice("probe", 1, 0x76, bus.factory), sleep=SleepRecorder()
        )
        with pytest.raises(SensorError, match="calibration data is blank"):
            sensor.read()

    def test_stuck_measuring_bit_times_out(self) -> None:
        chip = FakeBme280(0x60, B_CALIB, B_CALIB_H, B_DATA, busy_polls=100)
        bus = FakeSMBus({0x76: chip})
        sensor = Bme280Sensor(
            "probe", 10, I2CDevice("probe", 1, 0x76, bus.factory), sleep=SleepRecorder()
        )
        with pytest.raises(SensorError, match="timed out waiting for the conversion"):
            sensor.read()


class TestBmp280(I2CDriverContract):
    address = 0x77
    expected: ClassVar[Values] = {"temperature": (24.7895, "°C"), "pressure": (1006.6152, "hPa")}

    def make_device(self) -> FakeBme280:
        return FakeBme280(0x58, B_CALIB, b"\xff" * 7, B_DATA[:6])

    def make_sensor(self, dev: I2CDevice, sleep: SleepRecorder) -> BaseSensor:
        return Bme280Sensor("probe", 10, dev, humidity=False, sleep=sleep)

    def test_no_humidity_registers_touched(self) -> None:
        bus, sensor, _ = self._setup()
        sensor.read()
        assert 0xE1 not in [t.register for t in bus.log]
        assert next(t for t in bus.log if t.register == 0xF7).read == B_DATA[:6]


class TestSht3x(I2CDriverContract):
    address = 0x44
    expected: ClassVar[Values] = {"temperature": (25.0, "°C"), "humidity": (50.0008, "%RH")}

    def make_device(self) -> CommandDevice:
        return CommandDevice({b"\x24\x00": [SHT_FRAME]})

    def make_sensor(self, dev: I2CDevice, sleep: SleepRecorder) -> BaseSensor:
        return Sht3xSensor("probe", 10, dev, "high", sleep=sleep)

    def test_command_then_separate_read_with_wait(self) -> None:
        bus, sensor, sleep = self._setup()
        sensor.read()
        assert [(t.op, t.written, len(t.read)) for t in bus.log] == [
            ("i2c_rdwr", b"\x24\x00", 0),
            ("i2c_rdwr", b"", 6),
        ]
        assert sleep.calls == [pytest.approx(0.016, abs=1e-12)]  # >= 15 ms max + 1 ms margin

    def test_not_ready_nack_is_retried(self) -> None:
        nack = OSError(errno.EREMOTEIO, "Remote I/O error")
        bus = FakeSMBus({0x44: CommandDevice({b"\x24\x00": [nack, nack, SHT_FRAME]})})
        sleep = SleepRecorder()
        sensor = Sht3xSensor("probe", 10, I2CDevice("probe", 1, 0x44, bus.factory), sleep=sleep)
        assert _values(sensor.read()) == self.expected
        assert len(sleep.calls) == 3

    def test_crc_mismatch_is_never_returned(self) -> None:
        bad = bytes.fromhex("66669280 00A2".replace(" ", ""))
        bus = FakeSMBus({0x44: CommandDevice({b"\x24\x00": [bad]})})
        sensor = Sht3xSensor(
            "probe", 10, I2CDevice("probe", 1, 0x44, bus.factory), sleep=SleepRecorder()
        )
        with pytest.raises(SensorError, match="CRC mismatch on temperature word"):
            sensor.read()


class TestSht4x(I2CDriverContract):
    address = 0x44
    expected: ClassVar[Values] = {"temperature": (25.0, "°C"), "humidity": (56.501, "%RH")}

    def make_device(self) -> CommandDevice:
        return CommandDevice({b"\xfd": [SHT_FRAME]})

    def make_sensor(self, dev: I2CDevice, sleep: SleepRecorder) -> BaseSensor:
        return Sht4xSensor("probe", 10, dev, "high", sleep=sleep)

    def test_implausible_temperature(self) -> None:
        frame = bytes.fromhex("FFFFACFFFFAC")
        bus = FakeSMBus({0x44: CommandDevice({b"\xfd": [frame]})})
        sensor = Sht4xSensor(
            "probe", 10, I2CDevice("probe", 1, 0x44, bus.factory), sleep=SleepRecorder()
        )
        with pytest.raises(SensorError, match=r"implausible temperature °C 130\.000"):
            sensor.read()


class TestHtu21d(I2CDriverContract):
    address = 0x40
    expected: ClassVar[Values] = {"temperature": (24.6864, "°C"), "humidity": (54.791, "%RH")}

    def make_device(self) -> CommandDevice:
        return CommandDevice({b"\xf3": [HTU_T], b"\xf5": [HTU_RH]})

    def make_sensor(self, dev: I2CDevice, sleep: SleepRecorder) -> BaseSensor:
        return Htu21dSensor("probe", 10, dev, sleep=sleep)

    def test_all_zero_frame_is_rejected(self) -> None:
        bus = FakeSMBus({0x40: CommandDevice({b"\xf3": [b"\x00\x00\x00"], b"\xf5": [HTU_RH]})})
        sensor = Htu21dSensor(
            "probe", 10, I2CDevice("probe", 1, 0x40, bus.factory), sleep=SleepRecorder()
        )
        with pytest.raises(SensorError, match="all-zero frame"):
            sensor.read()

    def test_swapped_frames_fail_the_status_check(self) -> None:
        bus = FakeSMBus({0x40: CommandDevice({b"\xf3": [HTU_RH], b"\xf5": [HTU_RH]})})
        sensor = Htu21dSensor(
            "probe", 10, I2CDevice("probe", 1, 0x40, bus.factory), sleep=SleepRecorder()
        )
        with pytest.raises(SensorError, match="status bits do not match a temperature"):
            sensor.read()


class TestBh1750(I2CDriverContract):
    address = 0x23
    expected: ClassVar[Values] = {"illuminance": (28066.6667, "lx")}

    def make_device(self) -> CommandDevice:
        return CommandDevice({b"\x20": [b"\x83\x90"]})

    def make_sensor(self, dev: I2CDevice, sleep: SleepRecorder) -> BaseSensor:
        return Bh1750Sensor("probe", 10, dev, sleep=sleep)

    def test_one_opcode_per_transaction(self) -> None:
        bus = FakeSMBus({0x23: CommandDevice({b"\x20": [b"\x83\x90"]})})
        sensor = Bh1750Sensor(
            "probe", 10, I2CDevice("probe", 1, 0x23, bus.factory), mtreg=138, sleep=SleepRecorder()
        )
        assert _values(sensor.read()) == {"illuminance": (14033.3333, "lx")}
        assert [t.written for t in bus.log] == [b"\x01", b"\x44", b"\x6a", b"\x20", b""]

    def test_saturation(self) -> None:
        bus = FakeSMBus({0x23: CommandDevice({b"\x20": [b"\xff\xff"]})})
        sensor = Bh1750Sensor(
            "probe", 10, I2CDevice("probe", 1, 0x23, bus.factory), sleep=SleepRecorder()
        )
        with pytest.raises(SensorError, match="saturated"):
            sensor.read()


class TestAds1115(I2CDriverContract):
    address = 0x48
    expected: ClassVar[Values] = {"ain0": (2.048, "V"), "soil_moisture": (58.25, "%")}

    def make_device(self) -> FakeAds1115:
        return FakeAds1115({0: 0x4000, 1: 0x1234}, busy_polls=1)

    def make_sensor(self, dev: I2CDevice, sleep: SleepRecorder) -> BaseSensor:
        channels = [
            AdsChannel(channel=0),
            AdsChannel(channel=1, metric="soil_moisture", unit="%", scale=100.0, pga=4.096),
        ]
        return Ads1115Sensor("probe", 10, dev, channels, sleep=sleep)

    def test_config_words(self) -> None:
        bus, sensor, _ = self._setup()
        sensor.read()
        chip = bus.devices[0x48]
        assert isinstance(chip, FakeAds1115)
        assert chip.config_writes == [0xC383, 0xD383]

    def test_over_range(self) -> None:
        bus = FakeSMBus({0x48: FakeAds1115({0: 0x7FFF})})
        sensor = Ads1115Sensor(
            "probe",
            10,
            I2CDevice("probe", 1, 0x48, bus.factory),
            [AdsChannel(channel=0)],
            sleep=SleepRecorder(),
        )
        with pytest.raises(SensorError, match="AIN0: over-range"):
            sensor.read()


def test_scan_lists_answering_addresses() -> None:
    bus = FakeSMBus({0x76: CommandDevice({b"": [b"\x00"]}), 0x23: CommandDevice()})
    # read_byte on a CommandDevice with no command answers 121; give both a reply.
    for dev in bus.devices.values():
        assert isinstance(dev, CommandDevice)
        dev.last_command = b""
        dev.script[b""] = [b"\x00"]
    assert scan_bus(1, bus.factory) == [0x23, 0x76]
    assert bus.closed == 1


def test_scan_missing_bus() -> None:
    bus = FakeSMBus()
    bus.open_error = FileNotFoundError(errno.ENOENT, "No such file")
    with pytest.raises(SensorError, match="/dev/i2c-3 does not exist"):
        scan_bus(3, bus.factory)
