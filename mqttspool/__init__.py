"""mqttspool: store-and-forward telemetry bridge (sensors -> SQLite spool -> MQTT QoS 1)."""

from importlib.metadata import PackageNotFoundError, version

from mqttspool.config import Settings, load_config
from mqttspool.errors import (
    BrokerError,
    ConfigError,
    MqttspoolError,
    NotASpoolError,
    ReadingError,
    SensorError,
    SpoolCorruptError,
    SpoolError,
    SpoolFullError,
)
from mqttspool.reading import Reading, parse_payload, render_payload, render_topic
from mqttspool.spool import Spool, open_spool

try:
    __version__ = version("mqttspool")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "BrokerError",
    "ConfigError",
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
    "load_config",
    "open_spool",
    "parse_payload",
    "render_payload",
    "render_topic",
]
