"""Home Assistant discovery companion: documents, state topics, replay rules."""

from __future__ import annotations

import json
import logging

import pytest

from mqttspool import __version__
from mqttspool.bridge import OutMessage
from mqttspool.config import Settings, load_config
from mqttspool.homeassistant import HaSensorClass, HomeAssistantDiscovery, classify
from mqttspool.reading import StoredReading

TS = 1_795_651_200_000_000  # 2026-11-26T00:00:00Z in microseconds
NOW = TS + 60_000_000  # the wall clock when the readings are published


def _settings() -> Settings:
    return load_config(
        None,
        {
            "MQTTSPOOL_DEVICE__ID": "edge-01",
            "MQTTSPOOL_HOMEASSISTANT__DISCOVERY": "true",
            "MQTTSPOOL_HOMEASSISTANT__PREFIX": "ha",
            "MQTTSPOOL_TOPICS__PREFIX": "plant/telemetry",
        },
    )


def _row(
    seq: int, metric: str = "temperature", unit: str | None = "°C", ts_us: int = TS
) -> StoredReading:
    return StoredReading(seq, "edge-01", "bme280", metric, 21.5, unit, ts_us, True)


def _topics(messages: list[OutMessage]) -> list[str]:
    return [m.topic for m in messages]


@pytest.mark.parametrize(
    ("metric", "unit", "expected"),
    [
        ("temperature", "°C", HaSensorClass("temperature", "°C")),
        ("cpu", "°C", HaSensorClass("temperature", "°C")),
        ("humidity", "%RH", HaSensorClass("humidity", "%")),
        ("humidity", "%", HaSensorClass("humidity", "%")),
        ("pressure", "hPa", HaSensorClass("atmospheric_pressure", "hPa")),
        ("pressure", "Pa", HaSensorClass("atmospheric_pressure", "Pa")),
        ("illuminance", "lx", HaSensorClass("illuminance", "lx")),
        ("ain0", "V", HaSensorClass("voltage", "V")),
        ("load1", None, HaSensorClass(None, None)),
        ("disk_used", "%", HaSensorClass(None, "%")),
        ("widgets", "furlongs", HaSensorClass(None, "furlongs")),
    ],
)
def test_classify_maps_units_and_metric_names(
    metric: str, unit: str | None, expected: HaSensorClass
) -> None:
    assert classify(metric, unit) == expected


def test_fresh_reading_announces_once_and_publishes_retained_state() -> None:
    ha = HomeAssistantDiscovery(_settings())
    assert ha.on_connect() == []

    first = ha.on_reading(_row(1), replay=False, now_us=NOW)
    assert _topics(first) == [
        "ha/sensor/edge-01_bme280_temperature/config",
        "plant/telemetry/edge-01/bme280/temperature/state",
    ]
    assert all(m.retain and m.qos == 1 for m in first)
    assert json.loads(first[0].payload) == {
        "name": "bme280 temperature",
        "unique_id": "mqttspool_edge-01_bme280_temperature",
        "object_id": "edge-01_bme280_temperature",
        "state_topic": "plant/telemetry/edge-01/bme280/temperature/state",
        "value_template": "{{ value_json.value }}",
        "state_class": "measurement",
        "unit_of_measurement": "°C",
        "device_class": "temperature",
        "availability_topic": "plant/telemetry/edge-01/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": ["mqttspool_edge-01"],
            "name": "edge-01",
            "manufacturer": "mqttspool",
            "model": "mqttspool edge bridge",
            "sw_version": __version__,
        },
        "origin": {"name": "mqttspool", "sw_version": __version__},
    }
    assert json.loads(first[1].payload) == {
        "value": 21.5,
        "unit": "°C",
        "ts": "2026-11-26T00:00:00.000Z",
    }

    second = ha.on_reading(_row(2, ts_us=TS + 10_000_000), replay=False, now_us=NOW)
    assert _topics(second) == ["plant/telemetry/edge-01/bme280/temperature/state"]


def test_replayed_readings_touch_nothing() -> None:
    ha = HomeAssistantDiscovery(_settings())
    assert ha.on_reading(_row(1), replay=True, now_us=NOW) == []
    assert ha.on_connect() == []  # a replay does not even make the metric known


def test_reconnect_reannounces_every_metric_seen_live() -> None:
    ha = HomeAssistantDiscovery(_settings())
    ha.on_reading(_row(1), replay=False, now_us=NOW)
    ha.on_reading(_row(2, "humidity", "%RH"), replay=False, now_us=NOW)

    again = ha.on_connect()
    assert _topics(again) == [
        "ha/sensor/edge-01_bme280_humidity/config",
        "ha/sensor/edge-01_bme280_temperature/config",
    ]
    humidity = json.loads(again[0].payload)
    assert (humidity["device_class"], humidity["unit_of_measurement"]) == ("humidity", "%")
    # Announced by on_connect: the next reading only updates the state.
    assert _topics(ha.on_reading(_row(3, ts_us=TS + 1), replay=False, now_us=NOW)) == [
        "plant/telemetry/edge-01/bme280/temperature/state"
    ]


def test_unit_change_reannounces_and_unknown_unit_has_no_device_class() -> None:
    ha = HomeAssistantDiscovery(_settings())
    ha.on_reading(_row(1, "level", None), replay=False, now_us=NOW)
    changed = ha.on_reading(_row(2, "level", "V", ts_us=TS + 1), replay=False, now_us=NOW)
    assert _topics(changed)[0] == "ha/sensor/edge-01_bme280_level/config"
    assert json.loads(changed[0].payload)["device_class"] == "voltage"

    doc = HomeAssistantDiscovery(_settings()).discovery_config("edge-01", "sys", "load1", None)
    assert "device_class" not in doc
    assert "unit_of_measurement" not in doc


def test_state_never_moves_back_in_time() -> None:
    ha = HomeAssistantDiscovery(_settings())
    ha.on_reading(_row(1, ts_us=TS + 5_000_000), replay=False, now_us=NOW)
    assert ha.on_reading(_row(2, ts_us=TS), replay=False, now_us=NOW) == []


def test_future_dated_reading_does_not_freeze_the_state(caplog: pytest.LogCaptureFixture) -> None:
    ha = HomeAssistantDiscovery(_settings())
    day = 86_400_000_000
    with caplog.at_level(logging.WARNING, logger="mqttspool.homeassistant"):
        bad = ha.on_reading(_row(1, ts_us=NOW + day), replay=False, now_us=NOW)
        assert _topics(bad) == ["ha/sensor/edge-01_bme280_temperature/config"]  # no state
        later = ha.on_reading(_row(2, ts_us=NOW + 1_000_000), replay=False, now_us=NOW + 2_000_000)
        assert _topics(later) == ["plant/telemetry/edge-01/bme280/temperature/state"]
        ha.on_reading(_row(3, ts_us=NOW + day), replay=False, now_us=NOW + 3_000_000)
    (line,) = [r.getMessage() for r in caplog.records]  # throttled: one line for both
    assert line.startswith(
        "home assistant state: 1 reading(s) stamped more than 300 s in the future skipped"
        " (e.g. edge-01/bme280/temperature seq 1 at 2026-11-27T00:01:00.000Z, 86400 s ahead)"
    )


def test_reading_slightly_ahead_of_the_clock_still_sets_the_state() -> None:
    ha = HomeAssistantDiscovery(_settings())
    ahead = ha.on_reading(_row(1, ts_us=NOW + 299_000_000), replay=False, now_us=NOW)
    assert _topics(ahead)[-1] == "plant/telemetry/edge-01/bme280/temperature/state"
