"""Sensor registry: builds each configured sensor's driver from its typed config.

The options were validated when the configuration was loaded (one pydantic
model per driver in :mod:`mqttspool.sensor_config`); here each model is only
mapped to its driver class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mqttspool.sensor_config import (
    Ads1115Config,
    Bh1750Config,
    BoschConfig,
    CpuTempConfig,
    Ds18b20Config,
    Htu21dConfig,
    I2CConfig,
    SensorBase,
    SensorConfig,
    Sht3xConfig,
    Sht4xConfig,
    SimulatedConfig,
    SystemConfig,
)
from mqttspool.sensors.ads1115 import Ads1115Sensor
from mqttspool.sensors.base import Sensor, Sleep
from mqttspool.sensors.bh1750 import Bh1750Sensor
from mqttspool.sensors.bme280 import Bme280Sensor
from mqttspool.sensors.cpu_temp import CpuTempSensor
from mqttspool.sensors.ds18b20 import Ds18b20Sensor
from mqttspool.sensors.htu21d import Htu21dSensor
from mqttspool.sensors.i2c import BusFactory, I2CDevice, open_smbus
from mqttspool.sensors.sht import Sht3xSensor, Sht4xSensor
from mqttspool.sensors.simulated import SimulatedSensor
from mqttspool.sensors.system import SystemSensor

logger = logging.getLogger(__name__)


class BuildContext:
    """What drivers may need besides their options: the bus factory, sleep, spool dir."""

    def __init__(
        self,
        bus_factory: BusFactory = open_smbus,
        sleep: Sleep | None = None,
        spool_dir: str | None = None,
    ) -> None:
        self.bus_factory = bus_factory
        self.sleep: Sleep = sleep or time.sleep
        self.spool_dir = spool_dir


def _device(cfg: I2CConfig, ctx: BuildContext) -> I2CDevice:
    return I2CDevice(cfg.name, cfg.bus, cfg.address, ctx.bus_factory)


def _build_simulated(cfg: SimulatedConfig, ctx: BuildContext) -> Sensor:
    return SimulatedSensor(cfg.name, cfg.interval, seed=cfg.seed)


def _build_bosch(cfg: BoschConfig, ctx: BuildContext) -> Sensor:
    return Bme280Sensor(
        cfg.name,
        cfg.interval,
        _device(cfg, ctx),
        humidity=cfg.type == "bme280",
        oversampling=cfg.oversampling,
        sleep=ctx.sleep,
    )


def _build_sht3x(cfg: Sht3xConfig, ctx: BuildContext) -> Sensor:
    return Sht3xSensor(cfg.name, cfg.interval, _device(cfg, ctx), cfg.repeatability, ctx.sleep)


def _build_sht4x(cfg: Sht4xConfig, ctx: BuildContext) -> Sensor:
    return Sht4xSensor(cfg.name, cfg.interval, _device(cfg, ctx), cfg.precision, ctx.sleep)


def _build_htu21d(cfg: Htu21dConfig, ctx: BuildContext) -> Sensor:
    return Htu21dSensor(cfg.name, cfg.interval, _device(cfg, ctx), sleep=ctx.sleep)


def _build_bh1750(cfg: Bh1750Config, ctx: BuildContext) -> Sensor:
    device = _device(cfg, ctx)
    return Bh1750Sensor(cfg.name, cfg.interval, device, cfg.mode, cfg.mtreg, sleep=ctx.sleep)


def _build_ads1115(cfg: Ads1115Config, ctx: BuildContext) -> Sensor:
    device = _device(cfg, ctx)
    return Ads1115Sensor(cfg.name, cfg.interval, device, cfg.channels, sleep=ctx.sleep)


def _build_ds18b20(cfg: Ds18b20Config, ctx: BuildContext) -> Sensor:
    return Ds18b20Sensor(
        cfg.name,
        cfg.interval,
        device_id=cfg.device_id,
        path=cfg.path,
        devices_dir=cfg.devices_dir,
    )


def _build_cpu_temp(cfg: CpuTempConfig, ctx: BuildContext) -> Sensor:
    return CpuTempSensor(cfg.name, cfg.interval, cfg.path)


def _build_system(cfg: SystemConfig, ctx: BuildContext) -> Sensor:
    return SystemSensor(cfg.name, cfg.interval, disk_path=cfg.path or ctx.spool_dir or ".")


# Each builder takes its own config model; the union guarantees the match.
BUILDERS: dict[type[SensorBase], Callable[[Any, BuildContext], Sensor]] = {
    BoschConfig: _build_bosch,
    Sht3xConfig: _build_sht3x,
    Sht4xConfig: _build_sht4x,
    Htu21dConfig: _build_htu21d,
    Bh1750Config: _build_bh1750,
    Ads1115Config: _build_ads1115,
    Ds18b20Config: _build_ds18b20,
    CpuTempConfig: _build_cpu_temp,
    SystemConfig: _build_system,
    SimulatedConfig: _build_simulated,
}


def build_sensors(
    configs: list[SensorConfig],
    *,
    bus_factory: BusFactory = open_smbus,
    sleep: Sleep | None = None,
    spool_dir: str | None = None,
) -> list[Sensor]:
    """Build each configured sensor (buses are opened lazily, at first read)."""
    ctx = BuildContext(bus_factory, sleep, spool_dir)
    return [BUILDERS[type(cfg)](cfg, ctx) for cfg in configs]


def default_spool_dir(spool_path: str) -> str:
    """The directory holding the spool file (the filesystem ``system.disk_free`` watches)."""
    return str(Path(spool_path).resolve().parent)
