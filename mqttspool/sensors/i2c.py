"""The I2C boundary: every smbus2 call of the drivers goes through :class:`I2CDevice`.

The bus is opened lazily through an injected factory (tests pass a fake), and
every ``OSError`` is translated into a :class:`SensorError` naming the sensor,
the bus, the address, what was attempted and a hint for the usual cause.
"""

from __future__ import annotations

import errno as errnos
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from smbus2 import SMBus, i2c_msg

from mqttspool.errors import SensorError
from mqttspool.sensors.base import BaseSensor, Sleep

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCAN_FIRST = 0x03
SCAN_LAST = 0x77

# What usually sits at an address (for ``mqttspool sensors --scan``).
KNOWN_ADDRESSES: dict[int, str] = {
    0x23: "bh1750",
    0x40: "htu21d/si7021 (or ina219, pca9685)",
    0x44: "sht3x or sht4x",
    0x45: "sht3x (ADDR high) or sht4x-BD1B",
    0x46: "sht4x-CD1B",
    0x48: "ads1115 (ADDR to GND)",
    0x49: "ads1115 (ADDR to VDD)",
    0x4A: "ads1115 (ADDR to SDA)",
    0x4B: "ads1115 (ADDR to SCL)",
    0x5C: "bh1750 (ADDR high)",
    0x76: "bme280/bmp280 (SDO to GND)",
    0x77: "bme280/bmp280 (SDO to VDDIO)",
}


class SMBusLike(Protocol):
    """The subset of ``smbus2.SMBus`` the drivers use."""

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        """S a+W reg Sr a+R d P."""
        ...

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        """S a+W reg v P."""
        ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        """Register burst read (length <= 32)."""
        ...

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int]) -> None:
        """S a+W reg d0 .. dn P."""
        ...

    def write_byte(self, i2c_addr: int, value: int) -> None:
        """S a+W v P."""
        ...

    def read_byte(self, i2c_addr: int) -> int:
        """S a+R d P."""
        ...

    def i2c_rdwr(self, *i2c_msgs: Any) -> None:
        """Combined transaction; read buffers are filled in place."""
        ...

    def close(self) -> None:
        """Close the device file."""
        ...


BusFactory = Callable[[int], SMBusLike]


def open_smbus(bus: int) -> SMBusLike:
    """The production bus factory: ``smbus2.SMBus(bus)`` (opens ``/dev/i2c-<bus>``)."""
    smbus: SMBusLike = SMBus(bus)
    return smbus


def _open(sensor: str, bus: int, factory: BusFactory) -> SMBusLike:
    dev = f"/dev/i2c-{bus}"
    try:
        return factory(bus)
    except FileNotFoundError as exc:
        raise SensorError(
            sensor,
            f"{dev} does not exist: I2C not enabled (raspi-config > Interface Options > I2C,"
            " or dtparam=i2c_arm=on in /boot/firmware/config.txt) or wrong bus number",
            exc.errno,
        ) from exc
    except PermissionError as exc:
        raise SensorError(
            sensor,
            f"permission denied opening {dev}: user not in the i2c group"
            " (sudo usermod -aG i2c $USER, then log in again)",
            exc.errno,
        ) from exc
    except OSError as exc:
        raise SensorError(sensor, f"cannot open {dev}: {exc.strerror or exc}", exc.errno) from exc


def explain_oserror(exc: OSError, bus: int, address: int) -> str:
    """A one-line description of an I2C ``OSError`` with the likely cause."""
    where = f"0x{address:02x} on /dev/i2c-{bus}"
    code = exc.errno
    if code in (errnos.EREMOTEIO, errnos.ENXIO):
        return (
            f"no device answered at {where} (errno {code}): check wiring, power and the"
            f" address (i2cdetect -y {bus})"
        )
    if code == errnos.EIO:
        return (
            f"I/O error talking to {where} (errno 5): bus noise or clock stretching;"
            " check wiring, try dtparam=i2c_arm_baudrate=10000"
        )
    if code == errnos.ETIMEDOUT:
        return f"bus timeout at {where} (errno 110): SDA/SCL held low; power-cycle the sensor"
    if code == errnos.EBUSY:
        return (
            f"address {where} is busy (errno 16): a kernel driver owns it; remove the"
            " dtoverlay=i2c-sensor line for this chip"
        )
    if code == errnos.EOPNOTSUPP:
        return f"transfer not supported by the adapter at {where} (errno 95)"
    return f"{exc.strerror or exc} at {where} (errno {code})"


class I2CDevice:
    """One chip on one bus, with errors translated into :class:`SensorError`."""

    def __init__(self, sensor: str, bus: int, address: int, factory: BusFactory) -> None:
        self.sensor = sensor
        self.bus_number = bus
        self.address = address
        self._factory = factory
        self._bus: SMBusLike | None = None

    def _call(self, what: str, op: Callable[[SMBusLike], T]) -> T:
        if self._bus is None:
            self._bus = _open(self.sensor, self.bus_number, self._factory)
        try:
            return op(self._bus)
        except OSError as exc:
            # Reopen next time: after a bus fault a fresh file descriptor is the cheap reset.
            self.close()
            detail = explain_oserror(exc, self.bus_number, self.address)
            raise SensorError(self.sensor, f"{what}: {detail}", exc.errno) from exc

    def read_byte_data(self, register: int) -> int:
        """Read one register."""
        return self._call(
            f"reading register 0x{register:02x}",
            lambda b: int(b.read_byte_data(self.address, register)),
        )

    def write_byte_data(self, register: int, value: int) -> None:
        """Write one register."""
        self._call(
            f"writing register 0x{register:02x}",
            lambda b: b.write_byte_data(self.address, register, value),
        )

    def read_block(self, register: int, length: int) -> bytes:
        """Burst-read ``length`` bytes starting at ``register``."""
        return self._call(
            f"reading {length} bytes at 0x{register:02x}",
            lambda b: bytes(b.read_i2c_block_data(self.address, register, length)),
        )

    def write_block(self, register: int, data: Sequence[int]) -> None:
        """Write ``register`` followed by ``data`` in one transaction."""
        self._call(
            f"writing {len(data)} bytes at 0x{register:02x}",
            lambda b: b.write_i2c_block_data(self.address, register, list(data)),
        )

    def write(self, data: Sequence[int]) -> None:
        """A plain write transaction (a command), via ``i2c_rdwr``."""
        hexed = " ".join(f"{x:02x}" for x in data)
        self._call(
            f"sending command {hexed}",
            lambda b: b.i2c_rdwr(i2c_msg.write(self.address, list(data))),
        )

    def read(self, length: int) -> bytes:
        """A plain read transaction of ``length`` bytes, via ``i2c_rdwr``."""

        def op(b: SMBusLike) -> bytes:
            msg = i2c_msg.read(self.address, length)
            b.i2c_rdwr(msg)
            return bytes(msg)

        return self._call(f"reading {length} bytes", op)

    def close(self) -> None:
        """Close the bus file (reopened by the next call)."""
        bus, self._bus = self._bus, None
        if bus is not None:
            try:
                bus.close()
            except OSError as exc:
                logger.debug("closing /dev/i2c-%d: %s", self.bus_number, exc)


def scan_bus(bus: int, factory: BusFactory = open_smbus) -> list[int]:
    """Addresses 0x03..0x77 that acknowledge a one-byte read (like ``i2cdetect -r``)."""
    handle = _open("scan", bus, factory)
    found: list[int] = []
    try:
        for address in range(SCAN_FIRST, SCAN_LAST + 1):
            try:
                handle.read_byte(address)
            except OSError:
                continue
            found.append(address)
    finally:
        handle.close()
    return found


class I2CSensor(BaseSensor):
    """A driver talking to one :class:`I2CDevice`; ``sleep`` is injectable for tests."""

    def __init__(
        self, name: str, interval: float, device: I2CDevice, sleep: Sleep | None = None
    ) -> None:
        super().__init__(name, interval)
        self.device = device
        self._sleep: Sleep = sleep or time.sleep

    def close(self) -> None:
        """Close the bus."""
        self.device.close()
