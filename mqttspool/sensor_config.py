"""``[[sensors]]``: one pydantic model per driver, joined into a union tagged by ``type``.

Each entry has ``type``, ``name`` (default: the type) and ``interval``; every
other key is a driver option declared by that driver's model, so an unknown
or badly typed option fails when the configuration is loaded, with its field
path. The sensor registry (``mqttspool.sensors.registry``) builds drivers
from these models; this module imports no driver, so ``config`` stays free of
hardware code.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from mqttspool.reading import NAME_PATTERN

DAY_S = 86_400
MIN_INTERVAL_S = 0.01
MAX_INTERVAL_S = 30 * DAY_S
PGA_RANGES = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)


def int_from_text(value: Any) -> Any:
    """Accept an integer written as text (``"0x76"``, ``"1"``) as well as a TOML integer."""
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            return value  # pydantic reports it as "not a valid integer"
    return value


Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Interval = Annotated[float, Field(ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S)]
I2CBus = Annotated[int, BeforeValidator(int_from_text), Field(ge=0)]
I2CAddress = Annotated[int, BeforeValidator(int_from_text)]


class _Options(BaseModel):
    """Unknown keys are errors; floats must be finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SensorBase(_Options):
    """Keys every ``[[sensors]]`` entry has: ``type``, ``name``, ``interval``."""

    type: str
    name: Name
    interval: Interval = 10

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name"):
            kind = data.get("type", cls.model_fields["type"].default)
            if isinstance(kind, str):
                return {**data, "name": kind}
        return data


class I2CConfig(SensorBase):
    """Options shared by I2C drivers: ``bus`` (``/dev/i2c-<bus>``) and ``address``."""

    ADDRESSES: ClassVar[tuple[int, ...]] = ()
    bus: I2CBus = 1
    address: I2CAddress = 0

    @field_validator("address")
    @classmethod
    def _known_address(cls, v: int) -> int:
        if v not in cls.ADDRESSES:
            raise ValueError(f"must be one of {', '.join(f'0x{a:02x}' for a in cls.ADDRESSES)}")
        return v


class BoschConfig(I2CConfig):
    """``bme280`` / ``bmp280``: address 0x76 (SDO to GND) or 0x77; oversampling x1..x16."""

    ADDRESSES: ClassVar[tuple[int, ...]] = (0x76, 0x77)
    type: Literal["bme280", "bmp280"]
    address: I2CAddress = 0x76
    oversampling: Literal[1, 2, 4, 8, 16] = 1


class Sht3xConfig(I2CConfig):
    """``sht3x``: address 0x44 or 0x45; repeatability of the single-shot command."""

    ADDRESSES: ClassVar[tuple[int, ...]] = (0x44, 0x45)
    type: Literal["sht3x"] = "sht3x"
    address: I2CAddress = 0x44
    repeatability: Literal["high", "medium", "low"] = "high"


class Sht4xConfig(I2CConfig):
    """``sht4x``: address 0x44 (-AD1B), 0x45 (-BD1B) or 0x46 (-CD1B); measurement precision."""

    ADDRESSES: ClassVar[tuple[int, ...]] = (0x44, 0x45, 0x46)
    type: Literal["sht4x"] = "sht4x"
    address: I2CAddress = 0x44
    precision: Literal["high", "medium", "low"] = "high"


class Htu21dConfig(I2CConfig):
    """``htu21d`` (also Si7021, SHT21): fixed address 0x40."""

    ADDRESSES: ClassVar[tuple[int, ...]] = (0x40,)
    type: Literal["htu21d"] = "htu21d"
    address: I2CAddress = 0x40


class Bh1750Config(I2CConfig):
    """``bh1750``: address 0x23 (ADDR low) or 0x5c; resolution mode and MTreg."""

    ADDRESSES: ClassVar[tuple[int, ...]] = (0x23, 0x5C)
    type: Literal["bh1750"] = "bh1750"
    address: I2CAddress = 0x23
    mode: Literal["high", "high2", "low"] = "high"
    mtreg: int = Field(default=69, ge=31, le=254)


class AdsChannel(_Options):
    """One ADS1115 input (single-ended AINx to GND) and how to turn volts into a metric."""

    channel: int = Field(ge=0, le=3)
    pga: float = 4.096
    data_rate: Literal[8, 16, 32, 64, 128, 250, 475, 860] = 128
    metric: Name = ""
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
    def _metric_defaults_to_input(self) -> AdsChannel:
        if not self.metric:
            object.__setattr__(self, "metric", f"ain{self.channel}")  # frozen: set once, here
        return self


class Ads1115Config(I2CConfig):
    """``ads1115``: address 0x48..0x4b and a list of channels."""

    ADDRESSES: ClassVar[tuple[int, ...]] = (0x48, 0x49, 0x4A, 0x4B)
    type: Literal["ads1115"] = "ads1115"
    address: I2CAddress = 0x48
    channels: list[AdsChannel] = Field(min_length=1, max_length=4)

    @model_validator(mode="after")
    def _unique_metrics(self) -> Ads1115Config:
        metrics = [c.metric for c in self.channels]
        for m in metrics:
            if metrics.count(m) > 1:
                raise ValueError(f"metric {m!r} is used by two channels; give each a metric")
        return self


class Ds18b20Config(SensorBase):
    """``ds18b20``: ``device_id`` (28-...) or ``path`` to ``w1_slave``; neither = the only one."""

    type: Literal["ds18b20"] = "ds18b20"
    device_id: Annotated[str, Field(pattern=r"^28-[0-9a-f]{12}$")] | None = None
    path: str | None = None
    devices_dir: str = "/sys/bus/w1/devices"

    @model_validator(mode="after")
    def _one_way(self) -> Ds18b20Config:
        if self.device_id and self.path:
            raise ValueError("set device_id or path, not both")
        return self


class CpuTempConfig(SensorBase):
    """``cpu_temp``: the thermal zone's ``temp`` file (millidegrees)."""

    type: Literal["cpu_temp"] = "cpu_temp"
    path: str = "/sys/class/thermal/thermal_zone0/temp"


class SystemConfig(SensorBase):
    """``system``: ``path`` selects the filesystem for ``disk_free`` (default: the spool's)."""

    type: Literal["system"] = "system"
    path: str | None = None


class SimulatedConfig(SensorBase):
    """``simulated``: the random seed of the noise."""

    type: Literal["simulated"] = "simulated"
    seed: int = 0


SensorConfig = Annotated[
    BoschConfig
    | Sht3xConfig
    | Sht4xConfig
    | Htu21dConfig
    | Bh1750Config
    | Ads1115Config
    | Ds18b20Config
    | CpuTempConfig
    | SystemConfig
    | SimulatedConfig,
    Field(discriminator="type"),
]
"""One ``[[sensors]]`` entry: the model is chosen by ``type``."""

SENSOR_MODELS: tuple[type[SensorBase], ...] = get_args(get_args(SensorConfig)[0])
SENSOR_TYPES: tuple[str, ...] = tuple(
    kind for model in SENSOR_MODELS for kind in get_args(model.model_fields["type"].annotation)
)
_ADAPTER: TypeAdapter[SensorConfig] = TypeAdapter(SensorConfig)


def sensor_config(data: dict[str, Any]) -> SensorConfig:
    """Validate one ``[[sensors]]`` table (as parsed from TOML) into its typed model."""
    return _ADAPTER.validate_python(data)
