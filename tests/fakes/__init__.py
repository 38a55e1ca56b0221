"""Test doubles: a fake I2C bus and fake chips, fake clocks."""
