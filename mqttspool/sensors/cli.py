"""``mqttspool sensors``: read each configured sensor once, or scan an I2C bus.

Registered by :func:`mqttspool.cli.runtime.register`. Output goes to stdout,
one line per measurement or per failed sensor; exit 1 if any sensor failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from mqttspool.config import Settings
    from mqttspool.sensors.base import Sensor

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace, "Settings"], int]
Add = Callable[[str, Handler, str], argparse.ArgumentParser]


def register(add: Add) -> None:
    """Add the ``sensors`` subcommand."""
    p = add("sensors", cmd_sensors, "read each configured sensor once and print values or errors")
    p.add_argument("--scan", action="store_true", help="list I2C addresses that answer")
    p.add_argument("--bus", type=int, default=1, metavar="N", help="I2C bus for --scan (default 1)")


def cmd_sensors(args: argparse.Namespace, settings: Settings) -> int:
    """``mqttspool sensors [--scan [--bus N]]``: 0 if every sensor read, 1 otherwise."""
    if args.scan:
        return scan(args.bus, sys.stdout)
    from mqttspool.sensors.registry import build_sensors, default_spool_dir  # noqa: PLC0415

    sensors = build_sensors(settings.sensors, spool_dir=default_spool_dir(settings.spool.path))
    return read_all(sensors, sys.stdout)


def read_all(sensors: list[Sensor], out: TextIO) -> int:
    """Read every sensor once, print a table; 1 if any failed."""
    from mqttspool.errors import SensorError  # noqa: PLC0415

    failed = 0
    width = max((len(s.name) for s in sensors), default=0)
    for sensor in sensors:
        try:
            measurements = sensor.read()
        except SensorError as exc:
            failed += 1
            reason = str(exc).removeprefix(f"sensor {exc.sensor}: ")
            out.write(f"{sensor.name:<{width}}  ERROR  {reason}\n")
            continue
        except Exception as exc:  # noqa: BLE001 - report a driver bug as that sensor's error
            failed += 1
            out.write(f"{sensor.name:<{width}}  ERROR  {type(exc).__name__}: {exc}\n")
            continue
        finally:
            sensor.close()
        for m in measurements:
            unit = f" {m.unit}" if m.unit else ""
            out.write(f"{sensor.name:<{width}}  {m.metric:<14} {format_value(m.value)}{unit}\n")
    if failed:
        out.write(f"{failed} of {len(sensors)} sensor(s) failed\n")
    return 1 if failed else 0


def format_value(value: float) -> str:
    """Up to 4 decimals, trailing zeros removed (``21.37``, ``1006.6152``, ``1024``)."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def scan(bus: int, out: TextIO) -> int:
    """Print the addresses that answer on ``/dev/i2c-<bus>`` and the likely chip."""
    from mqttspool.errors import SensorError  # noqa: PLC0415
    from mqttspool.sensors.i2c import KNOWN_ADDRESSES, scan_bus  # noqa: PLC0415

    try:
        found = scan_bus(bus)
    except SensorError as exc:
        out.write(f"{exc}\n")
        return 1
    if not found:
        out.write(f"no device answered on /dev/i2c-{bus}\n")
        return 1
    for address in found:
        out.write(f"0x{address:02x}  {KNOWN_ADDRESSES.get(address, 'unknown device')}\n")
    return 0
