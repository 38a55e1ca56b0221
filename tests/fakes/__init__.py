"""Test doubles for hardware: a fake I2C bus and fake chips."""
