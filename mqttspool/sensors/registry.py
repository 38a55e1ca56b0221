"""Sensor registry: validates each driver's options and builds the sensors.

``[[sensors]]`` entries arrive as :class:`SensorConfig` with driver options
left open (``extra="allow"``); here each driver's options are checked by a
pydantic model with ``extra="forbid"``, so a typo is an error naming the
field path, e.g. ``sensors[0].address``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mqttspool.config import SensorConfig
from mqttspool.errors import ConfigError
from mqttspool.reading import NAME_PATTERN
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

MetricName = Annotated[str, Field(pattern=NAME_PATTERN)]


def _parse_int(v: Any) -> Any:
    """Accept ``0x76`` written as a string as well as a TOML integer."""
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            return v
    return v


class Options(BaseModel):
    """Base of every driver's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class I2COptions(Options):
    """Options shared by I2C drivers: ``bus`` (``/dev/i2c-<bus>``) and ``address``."""

    bus: int = Field(default=1, ge=0)

    ADDRESSES: ClassVar[tuple[int, ...]] = ()

    @field_validator("bus", "address", mode="before", check_fields=False)
    @classmethod
    def _hex_strings(cls, v: Any) -> Any:
        return _parse_int(v)

    @field_validator("address", check_fields=False)
    @classmethod
    def _known_address(cls, v: int) -> int:
        if v not in cls.ADDRESSES:
            raise ValueError(f"must be one of {', '.join(f'0x{a:02x}' for a in cls.ADDRESSES)}")
        return v


class BoschOptions(I2COptions):
    """``bme280`` / ``bmp280``: address 0x76 (SDO to GND) or 0x77; oversampling ×1..×16."""

    ADDRESSES: ClassVar[tuple[int, ...]] = (0x76, 0x77)
    address: int = 0x76
    oversampling: Literal[1, 2, 4, 8, 16] = 1

    _hex = field_validator("bus", "address", mode="before")(
        classmethod(lambda cls, v: _parse_int(v))
    )


class Sht3xOptions(I2COptions):
    """``sht3x``: address 0x44 or 0x45; repeatability of the single-shot command."""

    ADDRESSES: ClassVar[tuple[int, ...]] = (0x44, 0x45)
    address: int = 0x44
    repeatability: Literal["high", "medium", "low"] = "high"

    _hex = field_validator("bus", "address", mode="before")(
        classmethod(lambda cls, v: _parse_int(v))
    )


class Sht4xOptions(I2COptions):
    """``sht4x``: address 0x44 (-AD1B), 0x45 (-BD1B) or 0x46 (-CD1B); measurement precision."""

    ADDRESSES: ClassVar[tuple[int, ...]] = (0x44, 0x45, 0x46)
    address: int = 0x44
    precision: Literal["high", "medium", "low"] = "high"

    _hex = field_validator("bus", "address", mode="before")(
        classmethod(lambda cls, v: _parse_int(v))
    )


class Htu21dOptions(I2COptions):
    """``htu21d`` (also Si7021, SHT21): fixed address 0x40."""

    ADDRESSES: ClassVar[tuple[int, ...]] = (0x40,)
    address: int = 0x40

    _hex = field_validator("bus", "address", mode="before")(
        classmethod(lambda cls, v: _parse_int(v))
    )


class Bh1750Options(I2COptions):
    """``bh1750``: address 0x23 (ADDR low) or 0x5c; resolution mode and MTreg."""

    ADDRESSES: ClassVar[tuple[int, ...]] = (0x23, 0x5C)
    address: int = 0x23
    mode: Literal["high", "high2", "low"] = "high"
    mtreg: int = Field(default=69, ge=31, le=254)

    _hex = field_validator("bus", "address", mode="before")(
        classmethod(lambda cls, v: _parse_int(v))
    )


PGA_RANGES = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)


class AdsChannel(Options):
    """One ADS1115 input (single-ended AINx to GND) and how to turn volts into a metric."""

    channel: int = Field(ge=0, le=3)
    pga: float = 4.096
    data_rate: Literal[8, 16, 32, 64, 128, 250, 475, 860] = 128
    metric: MetricName = ""
    unit: Annotated[str, Field(max_length=16)] = "V"
    scale: float = 1.0
    offset: float = 0.0

    @field_validator("pga")
    @classmethod
    def _known_range(cls, v: float) -> float:
        if v not in PGA_RANGES:
            raise ValueError(
                f"must be one of {', '.join(map(str, PGA_RANGES))} (full scale, volts)"
            )
        return v

    @model_validator(mode="after")
    def _default_metric(self) -> AdsChannel:
        if not self.metric:
            object.__setattr__(self, "metric", f"ain{self.channel}")
        return self


class Ads1115Options(I2COptions):
    """``ads1115``: address 0x48..0x4b and a list of channels."""

    ADDRESSES: ClassVar[tuple[int, ...]] = (0x48, 0x49, 0x4A, 0x4B)
    address: int = 0x48
    channels: list[AdsChannel] = Field(min_length=1, max_length=4)

    _hex = field_validator("bus", "address", mode="before")(
        classmethod(lambda cls, v: _parse_int(v))
    )

    @model_validator(mode="after")
    def _unique_metrics(self) -> Ads1115Options:
        metrics = [c.metric for c in self.channels]
        for m in metrics:
            if metrics.count(m) > 1:
                raise ValueError(f"metric {m!r} is used by two channels; give each a metric")
        return self


class Ds18b20Options(Options):
    """``ds18b20``: ``device_id`` (28-...) or ``path`` to ``w1_slave``; neither = the only one."""

    device_id: Annotated[str, Field(pattern=r"^28-[0-9a-f]{12}$")] | None = None
    path: str | None = None
    devices_dir: str = "/sys/bus/w1/devices"

    @model_validator(mode="after")
    def _one_way(self) -> Ds18b20Options:
        if self.device_id and self.path:
            raise ValueError("set device_id or path, not both")
        return self


class CpuTempOptions(Options):
    """``cpu_temp``: the thermal zone's ``temp`` file (millidegrees)."""

    path: str = "/sys/class/thermal/thermal_zone0/temp"


class SystemOptions(Options):
    """``system``: ``path`` selects the filesystem for ``disk_free`` (default: the spool's)."""

    path: str | None = None


class SimulatedOptions(Options):
    """``simulated``: the random seed of the noise."""

    seed: int = 0


OPTION_MODELS: dict[str, type[Options]] = {
    "bme280": BoschOptions,
    "bmp280": BoschOptions,
    "sht3x": Sht3xOptions,
    "sht4x": Sht4xOptions,
    "htu21d": Htu21dOptions,
    "bh1750": Bh1750Options,
    "ads1115": Ads1115Options,
    "ds18b20": Ds18b20Options,
    "cpu_temp": CpuTempOptions,
    "system": SystemOptions,
    "simulated": SimulatedOptions,
}

SOURCE = "sensor options"


def validate_options(cfg: SensorConfig, index: int = 0) -> Options:
    """The driver options of ``cfg``, validated; raises :class:`ConfigError` (``sensors[i].x``)."""
    model = OPTION_MODELS[cfg.type]
    try:
        return model.model_validate(cfg.options)
    except ValidationError as exc:
        raise ConfigError(SOURCE, _problems(exc, index)) from exc


def validate_all(configs: list[SensorConfig]) -> list[Options]:
    """Validate every entry; one :class:`ConfigError` lists all problems."""
    problems: list[tuple[str, str]] = []
    out: list[Options] = []
    for i, cfg in enumerate(configs):
        try:
            out.append(validate_options(cfg, i))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(SOURCE, problems)
    return out


def _problems(exc: ValidationError, index: int) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        path = f"sensors[{index}]"
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown option for this sensor type (see docs/sensors.md)"
        elif err["type"] == "missing":
            msg = "required"
        elif "input" in err and err["loc"]:
            value = err["input"]
            shown = (
                f"0x{value:02x}" if isinstance(value, int) and "address" in path else repr(value)
            )
            msg = f"{msg} (got {shown})"
        problems.append((path, msg))
    return problems


Builder = Callable[[SensorConfig, Any, "BuildContext"], Sensor]


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


def _build_simulated(cfg: SensorConfig, opts: Any, ctx: BuildContext) -> Sensor:
    return SimulatedSensor(cfg.name, cfg.interval, seed=opts.seed)


def _build_bosch(cfg: SensorConfig, opts: Any, ctx: BuildContext) -> Sensor:
    dev = I2CDevice(cfg.name, opts.bus, opts.address, ctx.bus_factory)
    return Bme280Sensor(
        cfg.name,
        cfg.interval,
        dev,
        humidity=cfg.type == "bme280",
        oversampling=opts.oversampling,
        sleep=ctx.sleep,
    )


def _build_sht3x(cfg: SensorConfig, opts: Any, ctx: BuildContext) -> Sensor:
    dev = I2CDevice(cfg.name, opts.bus, opts.address, ctx.bus_factory)
    return Sht3xSensor(cfg.name, cfg.interval, dev, opts.repeatability, sleep=ctx.sleep)


def _build_sht4x(cfg: SensorConfig, opts: Any, ctx: BuildContext) -> Sensor:
    dev = I2CDevice(cfg.name, opts.bus, opts.address, ctx.bus_factory)
    return Sht4xSensor(cfg.name, cfg.interval, dev, opts.precision, sleep=ctx.sleep)


def _build_htu21d(cfg: SensorConfig, opts: Any, ctx: BuildContext) -> Sensor:
    dev = I2CDevice(cfg.name, opts.bus, opts.address, ctx.bus_factory)
    return Htu21dSensor(cfg.name, cfg.interval, dev, sleep=ctx.sleep)


def _build_bh1750(cfg: SensorConfig, opts: Any, ctx: BuildContext) -> Sensor:
    dev = I2CDevice(cfg.name, opts.bus, opts.address, ctx.bus_factory)
    return Bh1750Sensor(cfg.name, cfg.interval, dev, opts.mode, opts.mtreg, sleep=ctx.sleep)


def _build_ads1115(cfg: SensorConfig, opts: Any, ctx: BuildContext) -> Sensor:
    dev = I2CDevice(cfg.name, opts.bus, opts.address, ctx.bus_factory)
    return Ads1115Sensor(cfg.name, cfg.interval, dev, opts.channels, sleep=ctx.sleep)


def _build_ds18b20(cfg: SensorConfig, opts: Any, ctx: BuildContext) -> Sensor:
    return Ds18b20Sensor(
        cfg.name,
        cfg.interval,
        device_id=opts.device_id,
        path=opts.path,
        devices_dir=opts.devices_dir,
    )


def _build_cpu_temp(cfg: SensorConfig, opts: Any, ctx: BuildContext) -> Sensor:
    return CpuTempSensor(cfg.name, cfg.interval, opts.path)


def _build_system(cfg: SensorConfig, opts: Any, ctx: BuildContext) -> Sensor:
    return SystemSensor(cfg.name, cfg.interval, disk_path=opts.path or ctx.spool_dir or ".")


BUILDERS: dict[str, Builder] = {
    "bme280": _build_bosch,
    "bmp280": _build_bosch,
    "sht3x": _build_sht3x,
    "sht4x": _build_sht4x,
    "htu21d": _build_htu21d,
    "bh1750": _build_bh1750,
    "ads1115": _build_ads1115,
    "ds18b20": _build_ds18b20,
    "cpu_temp": _build_cpu_temp,
    "system": _build_system,
    "simulated": _build_simulated,
}


def build_sensors(
    configs: list[SensorConfig],
    *,
    bus_factory: BusFactory = open_smbus,
    sleep: Sleep | None = None,
    spool_dir: str | None = None,
) -> list[Sensor]:
    """Validate every entry and build its sensor (buses are opened lazily, at first read)."""
    options = validate_all(configs)
    ctx = BuildContext(bus_factory, sleep, spool_dir)
    return [BUILDERS[cfg.type](cfg, opts, ctx) for cfg, opts in zip(configs, options, strict=True)]


def default_spool_dir(spool_path: str) -> str:
    """The directory holding the spool file (the filesystem ``system.disk_free`` watches)."""
    return str(Path(spool_path).resolve().parent)
