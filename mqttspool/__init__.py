"""mqttspool: store-and-forward telemetry bridge (sensors -> SQLite spool -> MQTT QoS 1).

The public names below are imported lazily (PEP 562): ``import mqttspool`` (and
so every ``mqttspool.*`` module, including the CLI) does not pay for pydantic,
peewee or paho until a name that needs them is used. That keeps
``mqttspool health``, which Docker runs every few seconds, cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mqttspool.config import Settings, load_config
    from mqttspool.errors import (
        ConfigError,
        MqttspoolError,
        NotASpoolError,
        ReadingError,
        SensorError,
        SpoolCorruptError,
        SpoolError,
        SpoolFullError,
    )
    from mqttspool.reading import Reading
    from mqttspool.spool import Spool, open_spool
    from mqttspool.wire.batch import BatchError, DecodedReading, decode_batch
    from mqttspool.wire.payload import parse_payload, render_payload
    from mqttspool.wire.topics import render_topic

    __version__: str

_LAZY: dict[str, str] = {
    "BatchError": "mqttspool.wire.batch",
    "DecodedReading": "mqttspool.wire.batch",
    "decode_batch": "mqttspool.wire.batch",
    "Settings": "mqttspool.config",
    "load_config": "mqttspool.config",
    "ConfigError": "mqttspool.errors",
    "MqttspoolError": "mqttspool.errors",
    "NotASpoolError": "mqttspool.errors",
    "ReadingError": "mqttspool.errors",
    "SensorError": "mqttspool.errors",
    "SpoolCorruptError": "mqttspool.errors",
    "SpoolError": "mqttspool.errors",
    "SpoolFullError": "mqttspool.errors",
    "Reading": "mqttspool.reading",
    "parse_payload": "mqttspool.wire.payload",
    "render_payload": "mqttspool.wire.payload",
    "render_topic": "mqttspool.wire.topics",
    "Spool": "mqttspool.spool",
    "open_spool": "mqttspool.spool",
}

__all__ = [
    "BatchError",
    "ConfigError",
    "DecodedReading",
    "MqttspoolError",
    "NotASpoolError",
    "Reading",
    "ReadingError",
    "SensorError",
    "Settings",
    "Spool",
    "SpoolCorruptError",
    "SpoolError",
    "SpoolFullError",
    "__version__",
    "decode_batch",
    "load_config",
    "open_spool",
    "parse_payload",
    "render_payload",
    "render_topic",
]


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - lazy

    try:
        return version("mqttspool")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def __getattr__(name: str) -> Any:
    """Import a public name on first use and cache it in the package namespace."""
    if name == "__version__":
        value: Any = _package_version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'mqttspool' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
