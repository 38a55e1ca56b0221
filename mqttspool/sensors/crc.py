"""CRC-8 variants used by the sensors (see shared/reference/SENSORS.md)."""

from __future__ import annotations

from collections.abc import Iterable

SENSIRION_INIT = 0xFF  # SHT3x, SHT4x
HTU21D_INIT = 0x00  # HTU21D, Si7021, SHT21


def crc8(data: Iterable[int], poly: int = 0x31, init: int = SENSIRION_INIT) -> int:
    """CRC-8, MSB first, no reflection, no final XOR (Sensirion with init 0xFF)."""
    crc = init
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def crc8_maxim(data: Iterable[int]) -> int:
    """Dallas/Maxim 1-Wire CRC-8 (x^8+x^5+x^4+1, reflected 0x8C, init 0)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


def hex_bytes(data: Iterable[int]) -> str:
    """``66 66 93`` style rendering for error messages."""
    return " ".join(f"{b:02x}" for b in data)
