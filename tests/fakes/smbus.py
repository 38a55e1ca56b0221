"""A fake ``smbus2.SMBus``: fake chips by address, a transaction log and fault injection.

Every smbus call is reduced to raw write/read transactions on the device at
that address, as on the wire: ``read_byte_data(a, reg)`` is "write reg, read
1". Unknown addresses raise ``OSError(121)`` like the Pi's controller.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mqttspool.sensors.i2c import SMBusLike

I2C_M_RD = 0x0001


@dataclass
class Transaction:
    """One logged operation: smbus call name, address, register, bytes written and read."""

    op: str
    addr: int
    register: int | None
    written: bytes
    read: bytes


class FakeDevice:
    """A chip: receives raw written bytes and answers raw reads."""

    def write(self, data: bytes) -> None:
        """Bytes of one write transaction (after the address)."""
        raise NotImplementedError

    def read(self, n: int) -> bytes:
        """Bytes of one read transaction."""
        raise NotImplementedError


class RegisterDevice(FakeDevice):
    """A 256-byte register file with an auto-incrementing pointer (Bosch-style writes)."""

    def __init__(self) -> None:
        self.regs = bytearray(256)
        self.pointer = 0
        self.register_writes: list[tuple[int, int]] = []

    def write(self, data: bytes) -> None:
        """Pointer, then register/value pairs (Bosch parts do not auto-increment on write)."""
        self.pointer = data[0]
        rest = data[1:]
        if not rest:
            return
        pairs = [(self.pointer, rest[0])]
        tail = rest[1:]
        if len(tail) % 2:
            raise OSError(errno.EIO, "odd register/value pair write")
        pairs += [(tail[i], tail[i + 1]) for i in range(0, len(tail), 2)]
        for reg, value in pairs:
            self.register_writes.append((reg, value))
            self.on_register_write(reg, value)

    def on_register_write(self, reg: int, value: int) -> None:
        """Store the value; subclasses add side effects."""
        self.regs[reg] = value

    def read(self, n: int) -> bytes:
        """Registers from the pointer on."""
        out = bytes(self.regs[self.pointer : self.pointer + n])
        self.pointer = (self.pointer + n) % 256
        return out


class FakeBme280(RegisterDevice):
    """BME280/BMP280 register model: reset, forced-mode conversions, busy status reads."""

    def __init__(
        self,
        chip_id: int,
        calib_tp: bytes,
        calib_h: bytes,
        sample: bytes,
        busy_polls: int = 0,
    ) -> None:
        super().__init__()
        self.regs[0xD0] = chip_id
        self.regs[0x88 : 0x88 + 26] = calib_tp
        self.regs[0xE1 : 0xE1 + 7] = calib_h
        self.sample = sample
        self.busy_polls = busy_polls
        self._busy = 0
        self._reset_data()

    def _reset_data(self) -> None:
        self.regs[0xF7:0xFF] = bytes.fromhex("8000008000008000")

    def on_register_write(self, reg: int, value: int) -> None:
        """0xE0<-0xB6 resets; a forced write to 0xF4 loads the scripted sample."""
        if reg == 0xE0:
            if value == 0xB6:
                self._reset_data()
            return
        self.regs[reg] = value
        if reg == 0xF4 and value & 0x03 in (1, 2):
            self.regs[0xF7 : 0xF7 + len(self.sample)] = self.sample
            self._busy = self.busy_polls

    def read(self, n: int) -> bytes:
        """Status reads show ``measuring`` for ``busy_polls`` reads after a start."""
        if self.pointer == 0xF3 and n == 1:
            self.pointer += 1
            if self._busy:
                self._busy -= 1
                return b"\x08"
            return b"\x00"
        return super().read(n)


class FakeAds1115(FakeDevice):
    """Pointer-register model; a config write with OS=1 loads the scripted channel code."""

    def __init__(self, codes: dict[int, int], busy_polls: int = 0) -> None:
        self.codes = codes
        self.busy_polls = busy_polls
        self.regs = {0: 0, 1: 0x8583, 2: 0x8000, 3: 0x7FFF}
        self.pointer = 0
        self.config_writes: list[int] = []
        self._busy = 0

    def write(self, data: bytes) -> None:
        """1 byte sets the pointer; 3 bytes set pointer and register (MSB first)."""
        self.pointer = data[0] & 0x03
        if len(data) == 3:
            value = (data[1] << 8) | data[2]
            self.regs[self.pointer] = value
            if self.pointer == 1:
                self.config_writes.append(value)
                if value & 0x8000:
                    channel = ((value >> 12) & 0x7) - 4
                    self.regs[0] = self.codes[channel] & 0xFFFF
                    self._busy = self.busy_polls
        elif len(data) != 1:
            raise OSError(errno.EIO, "bad ADS1115 write length")

    def read(self, n: int) -> bytes:
        """The register at the pointer, MSB first; OS reads 0 while busy."""
        value = self.regs[self.pointer]
        if self.pointer == 1:
            value &= 0x7FFF
            if self._busy:
                self._busy -= 1
            else:
                value |= 0x8000
        return value.to_bytes(2, "big")[:n]


Reply = bytes | OSError


@dataclass
class CommandDevice(FakeDevice):
    """Command-based chip (SHT, HTU21D, BH1750): replies scripted per last command.

    ``script[cmd]`` is a list of replies consumed in order; the last one
    repeats. A read before any scripted command raises ``OSError(121)``.
    """

    script: dict[bytes, list[Reply]] = field(default_factory=dict)
    writes: list[bytes] = field(default_factory=list)
    last_command: bytes | None = None

    def write(self, data: bytes) -> None:
        """Record the command."""
        self.writes.append(bytes(data))
        if bytes(data) in self.script:
            self.last_command = bytes(data)

    def read(self, n: int) -> bytes:
        """The next scripted reply for the last command."""
        if self.last_command is None:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        replies = self.script[self.last_command]
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if isinstance(reply, OSError):
            raise reply
        return reply[:n]


class FakeSMBus:
    """Implements :class:`mqttspool.sensors.i2c.SMBusLike` over fake devices."""

    def __init__(self, devices: dict[int, FakeDevice] | None = None) -> None:
        self.devices: dict[int, FakeDevice] = dict(devices or {})
        self.log: list[Transaction] = []
        self.failures: dict[int, list[int]] = {}
        self.open_error: OSError | None = None
        self.opened: list[int] = []
        self.closed = 0

    # -------------------------------------------------------------- plumbing

    def factory(self, bus: int) -> SMBusLike:
        """A bus factory for drivers: returns this fake (or raises ``open_error``)."""
        if self.open_error is not None:
            raise self.open_error
        self.opened.append(bus)
        return self

    def fail_next(self, addr: int, count: int, err: int = errno.EREMOTEIO) -> None:
        """Make the next ``count`` operations on ``addr`` raise ``OSError(err)``."""
        self.failures.setdefault(addr, []).extend([err] * count)

    def _device(self, addr: int) -> FakeDevice:
        pending = self.failures.get(addr)
        if pending:
            code = pending.pop(0)
            raise OSError(code, "injected fault")
        device = self.devices.get(addr)
        if device is None:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        return device

    def _xfer(self, op: str, addr: int, reg: int | None, out: Sequence[int], n: int) -> bytes:
        device = self._device(addr)
        written = bytes(out)
        if written:
            device.write(written)
        data = device.read(n) if n else b""
        self.log.append(Transaction(op, addr, reg, written, data))
        return data

    # ------------------------------------------------------------ smbus API

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        """Write the register, read one byte."""
        return self._xfer("read_byte_data", i2c_addr, register, [register], 1)[0]

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        """Write register and value."""
        self._xfer("write_byte_data", i2c_addr, register, [register, value], 0)

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        """Write the register, read ``length`` bytes (at most 32, like smbus2)."""
        if length > 32:
            raise ValueError("Desired block length over 32 bytes")
        return list(self._xfer("read_i2c_block_data", i2c_addr, register, [register], length))

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int]) -> None:
        """Write register then data."""
        self._xfer("write_i2c_block_data", i2c_addr, register, [register, *data], 0)

    def read_word_data(self, i2c_addr: int, register: int) -> int:
        """SMBus word: little-endian, so byte-order bugs show up."""
        d = self._xfer("read_word_data", i2c_addr, register, [register], 2)
        return d[0] | (d[1] << 8)

    def write_word_data(self, i2c_addr: int, register: int, value: int) -> None:
        """Low byte first."""
        self._xfer("write_word_data", i2c_addr, register, [register, value & 0xFF, value >> 8], 0)

    def write_byte(self, i2c_addr: int, value: int) -> None:
        """One byte, one transaction."""
        self._xfer("write_byte", i2c_addr, None, [value], 0)

    def read_byte(self, i2c_addr: int) -> int:
        """Read one byte."""
        return self._xfer("read_byte", i2c_addr, None, [], 1)[0]

    def i2c_rdwr(self, *i2c_msgs: Any) -> None:
        """Walk the messages; a read may only be the last one (as on i2c-bcm2835)."""
        for i, msg in enumerate(i2c_msgs):
            if msg.flags & I2C_M_RD and i != len(i2c_msgs) - 1:
                raise OSError(errno.EOPNOTSUPP, "only one read message supported, has to be last")
        for msg in i2c_msgs:
            if msg.flags & I2C_M_RD:
                data = self._xfer("i2c_rdwr", msg.addr, None, [], msg.len)
                if len(data) < msg.len:
                    data = data + bytes(msg.len - len(data))
                ctypes.memmove(msg.buf, data, msg.len)
            else:
                self._xfer("i2c_rdwr", msg.addr, None, bytes(msg), 0)

    def close(self) -> None:
        """Count closes."""
        self.closed += 1


class SleepRecorder:
    """A ``sleep`` replacement that records the requested delays and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        """Record ``seconds``."""
        self.calls.append(seconds)
