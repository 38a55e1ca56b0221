"""Sensor drivers (the only code that talks to smbus2 and sysfs) and their registry.

Kept light on purpose: ``mqttspool.sensors.registry`` (which imports every
driver) is loaded only by the code that builds sensors.
"""

from mqttspool.sensors.base import BaseSensor, Measurement, Sensor

__all__ = ["BaseSensor", "Measurement", "Sensor"]
