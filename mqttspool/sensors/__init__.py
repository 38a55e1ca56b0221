"""Sensor drivers (the only code that talks to smbus2 and sysfs) and their registry."""

from mqttspool.sensors.base import BaseSensor, Measurement, Sensor
from mqttspool.sensors.registry import build_sensors, validate_options

__all__ = ["BaseSensor", "Measurement", "Sensor", "build_sensors", "validate_options"]
