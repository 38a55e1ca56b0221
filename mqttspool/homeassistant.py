"""Home Assistant MQTT discovery and retained "current value" state topics.

:class:`HomeAssistantDiscovery` is a bridge companion (see
:class:`mqttspool.bridge.Companion`). For every ``(sensor, metric)`` seen in a
*fresh* reading it publishes, once per connection, a retained discovery
document to ``{homeassistant.prefix}/sensor/{device}_{sensor}_{metric}/config``,
and with every fresh reading the value, retained, to the state topic
``{topics.prefix}/{device}/{sensor}/{metric}/state``.

Replayed readings (``replay=true``: older than ``bridge.live_window`` when
published, i.e. the backlog after an outage) never touch the state topic: the
retained state is the latest *live* value, so a replay of yesterday's backlog
does not make Home Assistant show yesterday's temperature as current. The
history, replayed or not, stays on the data topic
``{topics.prefix}/{device}/{sensor}/{metric}`` (every reading with its ``ts``).

A reading stamped more than :data:`FUTURE_TOLERANCE_S` ahead of the clock (a
clock error, or a bad ``ts`` given to ``enqueue``) does not touch the state
topic either: since the state never moves back in time, it would otherwise
freeze Home Assistant's value until that moment has passed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mqttspool.bridge import OutMessage
from mqttspool.logthrottle import LogThrottle
from mqttspool.reading import format_ts
from mqttspool.wire.topics import ha_state_topic as state_topic
from mqttspool.wire.topics import status_topic

if TYPE_CHECKING:
    from mqttspool.config import Settings
    from mqttspool.reading import StoredReading

logger = logging.getLogger(__name__)

MANUFACTURER = "mqttspool"
MODEL = "mqttspool edge bridge"
PAYLOAD_AVAILABLE = "online"
PAYLOAD_NOT_AVAILABLE = "offline"
VALUE_TEMPLATE = "{{ value_json.value }}"
FUTURE_TOLERANCE_S = 300  # how far ahead of the clock a reading may still set the state
_FUTURE_LOG_INTERVAL_S = 300.0

# unit -> (device_class, unit Home Assistant accepts for that class)
_CLASS_BY_UNIT: dict[str, tuple[str, str]] = {
    "°C": ("temperature", "°C"),
    "°F": ("temperature", "°F"),
    "K": ("temperature", "K"),
    "%RH": ("humidity", "%"),
    "Pa": ("atmospheric_pressure", "Pa"),
    "hPa": ("atmospheric_pressure", "hPa"),
    "kPa": ("atmospheric_pressure", "kPa"),
    "mbar": ("atmospheric_pressure", "mbar"),
    "bar": ("atmospheric_pressure", "bar"),
    "lx": ("illuminance", "lx"),
    "V": ("voltage", "V"),
    "mV": ("voltage", "mV"),
    "A": ("current", "A"),
    "mA": ("current", "mA"),
    "W": ("power", "W"),
    "ppm": ("carbon_dioxide", "ppm"),
    "B": ("data_size", "B"),
    "s": ("duration", "s"),
}
# metric name -> device_class, for readings whose unit alone is ambiguous (e.g. "%")
_CLASS_BY_METRIC: dict[str, str] = {
    "humidity": "humidity",
    "temperature": "temperature",
    "pressure": "atmospheric_pressure",
    "illuminance": "illuminance",
    "voltage": "voltage",
    "battery": "battery",
}
# Units Home Assistant accepts for the classes a metric name may imply.
_PERCENT_CLASSES = frozenset({"humidity", "battery"})


@dataclass(frozen=True)
class HaSensorClass:
    """How one metric appears in Home Assistant: device class (or None) and unit."""

    device_class: str | None
    unit: str | None


def classify(metric: str, unit: str | None) -> HaSensorClass:
    """Map a metric name and unit to a Home Assistant device class and unit.

    The unit decides first (``°C`` is a temperature whatever the metric is
    called); a metric name only decides when its unit fits the class (``%``
    for humidity). ``%RH`` becomes ``%``, the unit Home Assistant requires
    for humidity. Unknown combinations get no device class.
    """
    if unit is not None and unit in _CLASS_BY_UNIT:
        device_class, ha_unit = _CLASS_BY_UNIT[unit]
        return HaSensorClass(device_class, ha_unit)
    by_name = _CLASS_BY_METRIC.get(metric.lower())
    if by_name in _PERCENT_CLASSES and unit == "%":
        return HaSensorClass(by_name, "%")
    return HaSensorClass(None, unit)


def config_topic(ha_prefix: str, device: str, sensor: str, metric: str) -> str:
    """``{ha_prefix}/sensor/{device}_{sensor}_{metric}/config``."""
    return f"{ha_prefix}/sensor/{device}_{sensor}_{metric}/config"


def _version() -> str:
    from mqttspool import __version__  # noqa: PLC0415 - the package imports lazily

    return __version__


class HomeAssistantDiscovery:
    """Bridge companion: HA discovery documents and retained live state per metric."""

    def __init__(self, settings: Settings) -> None:
        self.prefix = settings.topics.prefix
        self.ha_prefix = settings.homeassistant.prefix
        self.device = settings.device.id
        self.availability_topic = status_topic(self.prefix, self.device)
        self.sw_version = _version()
        # (device, sensor, metric) -> unit; readings from `enqueue` may name other devices.
        self._units: dict[tuple[str, str, str], str | None] = {}  # every metric seen live
        self._announced: dict[tuple[str, str, str], str | None] = {}  # this connection
        self._last_ts: dict[tuple[str, str, str], int] = {}
        self._future_log = LogThrottle(_FUTURE_LOG_INTERVAL_S)

    def on_connect(self) -> list[OutMessage]:
        """Re-announce every metric seen live so far (a fresh connection, a fresh set)."""
        self._announced = dict(self._units)
        return [self._config_message(*key, unit) for key, unit in sorted(self._units.items())]

    def on_reading(self, row: StoredReading, replay: bool, now_us: int) -> list[OutMessage]:
        """Discovery (once per connection) and state for fresh readings; nothing for replays.

        ``now_us`` is the wall clock when the reading was published: readings too far
        ahead of it do not update the state.
        """
        if replay:
            return []
        key = (row.device, row.sensor, row.metric)
        out: list[OutMessage] = []
        if key not in self._announced or self._announced[key] != row.unit:
            self._units[key] = row.unit
            self._announced[key] = row.unit
            out.append(self._config_message(*key, row.unit))
            logger.info(
                "home assistant discovery: announced %s/%s/%s (%s)",
                row.device,
                row.sensor,
                row.metric,
                classify(row.metric, row.unit).device_class or "no device class",
            )
        if row.ts_us > now_us + FUTURE_TOLERANCE_S * 1_000_000:
            self._log_future(row, now_us)
        elif row.ts_us >= self._last_ts.get(key, row.ts_us):
            # Never move the retained state backwards in time (e.g. a late fresh reading).
            self._last_ts[key] = row.ts_us
            out.append(self._state_message(row))
        return out

    def _log_future(self, row: StoredReading, now_us: int) -> None:
        count = self._future_log.note()
        if count:
            logger.warning(
                "home assistant state: %d reading(s) stamped more than %d s in the future"
                " skipped (e.g. %s/%s/%s seq %d at %s, %.0f s ahead); check the clock or the"
                " ts given to enqueue",
                count,
                FUTURE_TOLERANCE_S,
                row.device,
                row.sensor,
                row.metric,
                row.seq,
                format_ts(row.ts_us),
                (row.ts_us - now_us) / 1_000_000,
            )

    # ------------------------------------------------------------ documents

    def discovery_config(
        self, device: str, sensor: str, metric: str, unit: str | None
    ) -> dict[str, Any]:
        """The Home Assistant discovery document for one metric."""
        ha = classify(metric, unit)
        object_id = f"{device}_{sensor}_{metric}"
        doc: dict[str, Any] = {
            "name": f"{sensor} {metric}",
            "unique_id": f"mqttspool_{object_id}",
            "object_id": object_id,
            "state_topic": state_topic(self.prefix, device, sensor, metric),
            "value_template": VALUE_TEMPLATE,
            "state_class": "measurement",
        }
        if ha.unit is not None:
            doc["unit_of_measurement"] = ha.unit
        if ha.device_class is not None:
            doc["device_class"] = ha.device_class
        doc |= {
            "availability_topic": self.availability_topic,
            "payload_available": PAYLOAD_AVAILABLE,
            "payload_not_available": PAYLOAD_NOT_AVAILABLE,
            "device": {
                "identifiers": [f"mqttspool_{device}"],
                "name": device,
                "manufacturer": MANUFACTURER,
                "model": MODEL,
                "sw_version": self.sw_version,
            },
            "origin": {"name": "mqttspool", "sw_version": self.sw_version},
        }
        return doc

    def _config_message(
        self, device: str, sensor: str, metric: str, unit: str | None
    ) -> OutMessage:
        doc = self.discovery_config(device, sensor, metric, unit)
        return OutMessage(
            config_topic(self.ha_prefix, device, sensor, metric), _compact(doc), retain=True
        )

    def _state_message(self, row: StoredReading) -> OutMessage:
        doc = {"value": row.value, "unit": row.unit, "ts": format_ts(row.ts_us)}
        return OutMessage(
            state_topic(self.prefix, row.device, row.sensor, row.metric),
            _compact(doc),
            retain=True,
        )


def _compact(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
