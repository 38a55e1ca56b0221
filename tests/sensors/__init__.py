"""Sensor drivers (fake bus, fake sysfs, datasheet vectors) and the sensors command."""
