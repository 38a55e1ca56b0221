"""Configuration: one pydantic-settings model tree (TOML file + environment).

Precedence, highest first: ``MQTTSPOOL_<SECTION>__<KEY>`` environment
variables, the TOML file (``-c FILE`` or ``MQTTSPOOL_CONFIG``), built-in
defaults. Unknown keys are errors, in the file and in the environment.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mqttspool.errors import ConfigError
from mqttspool.reading import NAME_PATTERN

ENV_PREFIX = "MQTTSPOOL_"
CONFIG_ENV = "MQTTSPOOL_CONFIG"
SECRET_MASK = "********"  # noqa: S105 - the mask, not a secret
SensorType = Literal[
    "bme280",
    "bmp280",
    "sht3x",
    "sht4x",
    "htu21d",
    "bh1750",
    "ads1115",
    "ds18b20",
    "cpu_temp",
    "system",
    "simulated",
]
SENSOR_TYPES: tuple[str, ...] = get_args(SensorType)

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Seconds = Annotated[float, Field(ge=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]


def default_device_id() -> str:
    """The host name, reduced to what a topic level may hold."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64]
    return name or "mqttspool"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DeviceConfig(_Section):
    """``[device]``: who this node is."""

    id: Name = Field(default_factory=default_device_id)


class TlsConfig(_Section):
    """``[broker.tls]``: transport security."""

    enabled: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure: bool = False

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file must be set together (mTLS)")
        return self


class BrokerConfig(_Section):
    """``[broker]``: where to publish and how to log in."""

    host: str = Field(default="localhost", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str = ""
    keepalive: int = Field(default=30, ge=5, le=65535)
    username: str = ""
    password: SecretStr = SecretStr("")
    password_file: str = ""
    tls: TlsConfig = Field(default_factory=TlsConfig)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    def address(self) -> str:
        """``host:port``, the name used in every broker error."""
        return f"{self.host}:{self.port}"

    def resolved_password(self) -> SecretStr | None:
        """The password to send, reading ``password_file`` (which wins) if set."""
        if self.password_file:
            try:
                text = Path(self.password_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    "broker.password_file",
                    [("broker.password_file", f"cannot read {self.password_file}: {exc.strerror}")],
                ) from exc
            return SecretStr(text.rstrip("\r\n"))
        secret = self.password.get_secret_value()
        return SecretStr(secret) if secret else None


class TopicsConfig(_Section):
    """``[topics]``."""

    prefix: str = Field(default="mqttspool", pattern=r"^[^#+\s][^#+]*$")

    @field_validator("prefix")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        if v.endswith("/"):
            raise ValueError("must not end with '/'")
        return v


class SpoolConfig(_Section):
    """``[spool]``: where readings wait and how much of them may pile up."""

    path: str = "mqttspool.db"
    synchronous: Literal["full", "normal"] = "full"
    max_rows: int = Field(default=1_000_000, ge=1)
    max_age: Seconds = 0
    min_free_bytes: int = Field(default=50 * 1024 * 1024, ge=0)
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"

    @field_validator("synchronous", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class BridgeConfig(_Section):
    """``[bridge]``: the drain loop."""

    max_inflight: int = Field(default=500, ge=1, le=65535)
    live_window: Seconds = 60
    reconnect_min: PositiveSeconds = 1
    reconnect_max: PositiveSeconds = 60
    shutdown_timeout: Seconds = 10
    max_rate: Seconds = 0
    live_first: bool = False
    # Added by the bridge (issue 9.16): when the oldest unacknowledged QoS 1 message has
    # waited this long, drop the connection and resend after reconnecting.
    ack_timeout: float = Field(default=30, gt=0, le=86_400, allow_inf_nan=False)

    @model_validator(mode="after")
    def _backoff_order(self) -> BridgeConfig:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be >= reconnect_min")
        return self


class SensorConfig(BaseModel):
    """One ``[[sensors]]`` entry; driver options are checked by the sensor registry."""

    model_config = ConfigDict(extra="allow")

    type: SensorType
    name: Name = ""
    interval: PositiveSeconds = 10

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name") and isinstance(data.get("type"), str):
            return {**data, "name": data["type"]}
        return data

    @property
    def options(self) -> dict[str, Any]:
        """Driver-specific keys (everything but type, name, interval)."""
        return dict(self.model_extra or {})


class HomeAssistantConfig(_Section):
    """``[homeassistant]``: MQTT discovery."""

    discovery: bool = False
    prefix: str = "homeassistant"


class MetricsConfig(_Section):
    """``[metrics]``: optional Prometheus endpoint."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=1, le=65535)


class LogConfig(_Section):
    """``[log]``."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml", default=None)
_environ: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "environ", default=None
)


class _MappingEnvSource(EnvSettingsSource):
    """Environment source reading the mapping given to :func:`load_config`.

    pydantic-settings always reads ``os.environ``; without this, the keys
    checked by :func:`_check_env_keys` and the values applied could differ.
    """

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _environ.get()
        if environ is None:
            return super()._load_env_vars()
        if self.case_sensitive:
            return dict(environ)
        return {k.lower(): v for k, v in environ.items()}


class Settings(BaseSettings):
    """The whole configuration tree."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    device: DeviceConfig = Field(default_factory=DeviceConfig)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    bridge: BridgeConfig = Field(default_factory=BridgeConfig)
    sensors: list[SensorConfig] = Field(default_factory=list)
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @field_validator("sensors")
    @classmethod
    def _default_sensor_and_unique_names(cls, v: list[SensorConfig]) -> list[SensorConfig]:
        if not v:
            return [SensorConfig(type="simulated", name="simulated", interval=10)]
        seen: set[str] = set()
        for sensor in v:
            if sensor.name in seen:
                raise ValueError(f"sensor name {sensor.name!r} is used twice; names must be unique")
            seen.add(sensor.name)
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, _MappingEnvSource(settings_cls)]
        path = _toml_path.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def config_path_from(cli_path: str | None, environ: Mapping[str, str]) -> Path | None:
    """The TOML file to read: ``-c`` wins over ``MQTTSPOOL_CONFIG``; None means defaults."""
    raw = cli_path or environ.get(CONFIG_ENV) or None
    return Path(raw) if raw else None


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load, validate and return the settings; raises :class:`ConfigError` (exit 2)."""
    environ = os.environ if environ is None else environ
    source = str(path) if path else "built-in defaults"
    if path is not None:
        _check_toml(path)
    _check_env_keys(environ, source)
    token = _toml_path.set(path)
    env_token = _environ.set(environ)
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from exc
    finally:
        _environ.reset(env_token)
        _toml_path.reset(token)
    _check_sensor_options(settings, source)
    return settings


def _check_sensor_options(settings: Settings, source: str) -> None:
    """Driver options (bus, address, channels...) are checked by the sensor registry."""
    from mqttspool.sensors.registry import validate_all  # noqa: PLC0415 - registry imports us

    try:
        validate_all(settings.sensors)
    except ConfigError as exc:
        raise ConfigError(source, exc.problems) from exc


def _check_toml(path: Path) -> None:
    source = str(path)
    try:
        with path.open("rb") as fh:
            tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(source, [("", f"config file {path} does not exist")]) from exc
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read {path}: {exc.strerror}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [("", f"{path} is not valid TOML: {exc}")]) from exc


def _check_env_keys(environ: Mapping[str, str], source: str) -> None:
    """Reject ``MQTTSPOOL_*`` variables that name no setting (a typo must not be ignored)."""
    problems: list[tuple[str, str]] = []
    for key in environ:
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV:
            continue
        parts = key[len(ENV_PREFIX) :].lower().split("__")
        if not _known_path(Settings, parts):
            problems.append((key, "unknown setting (check the section and key name)"))
    if problems:
        raise ConfigError(f"{source} + environment", problems)


def _known_path(model: type[BaseModel], parts: list[str]) -> bool:
    if not parts:
        return True
    field = model.model_fields.get(parts[0])
    if field is None:
        return False
    ann = field.annotation
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return _known_path(ann, parts[1:])
    return len(parts) == 1


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        loc = _field_path(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see config/mqttspool.toml)"
        elif err["type"] == "missing":
            msg = "required"
        elif "input" in err and err["loc"]:
            shown = SECRET_MASK if _is_secret_path(loc) else _show(err["input"])
            msg = f"{msg} (got {shown})"
        problems.append((loc, msg))
    return problems


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in SENSOR_TYPES and out.endswith("]"):
            continue  # union tag noise
        else:
            out += f".{part}" if out else str(part)
    return out


def _is_secret_path(path: str) -> bool:
    return "password" in path or "token" in path or "secret" in path


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def effective_config(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with secrets masked (for ``check-config``)."""
    data = settings.model_dump(mode="json")
    password = settings.broker.password.get_secret_value()
    data["broker"]["password"] = SECRET_MASK if password else ""
    data["sensors"] = [
        {"type": s.type, "name": s.name, "interval": s.interval, **s.options}
        for s in settings.sensors
    ]
    return data


def to_toml(data: Mapping[str, Any]) -> str:
    """Render the effective config as TOML (tables and arrays of tables only)."""
    lines: list[str] = []
    _toml_table(lines, [], data)
    return "\n".join(lines).strip() + "\n"


def _toml_table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict | list)}
    scalars |= {
        k: v
        for k, v in table.items()
        if isinstance(v, list) and not all(isinstance(x, dict) for x in v)
    }
    if path and scalars:
        lines.append(f"\n[{'.'.join(path)}]")
    lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
    for key, value in table.items():
        if isinstance(value, dict):
            _toml_table(lines, [*path, key], value)
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            for item in value:
                lines.append(f"\n[[{'.'.join([*path, key])}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value), ensure_ascii=False)
