"""Configuration: one pydantic-settings model tree (TOML file + environment).

Precedence, highest first: ``MQTTSPOOL_<SECTION>__<KEY>`` environment
variables, the TOML file (``-c FILE`` or ``MQTTSPOOL_CONFIG``), built-in
defaults. Unknown keys are errors, in the file and in the environment.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mqttspool.errors import ConfigError
from mqttspool.sensor_config import SENSOR_TYPES, Name, SensorConfig, SimulatedConfig
from mqttspool.settings_source import (
    CONFIG_ENV,
    DEFAULT_SPOOL_PATH,
    DEFAULTS_SOURCE,
    ENV_PREFIX,
    EnvSettings,
    config_file,
    env_settings,
    layered,
    read_toml,
)
from mqttspool.validation import SECRET_MASK, Problem, is_secret, problems_from

__all__ = ["CONFIG_ENV", "ENV_PREFIX"]  # re-exported: the rules live in settings_source

DAY_S = 86_400
MAX_DURATION_S = 30 * DAY_S  # timeouts, backoff, windows: a month is already absurd
MAX_AGE_S = 365 * DAY_S  # how old a queued reading may get: a year of outage is plausible
MIN_RATE = 1e-6  # one message per ~11.6 days; slower rates are typos (0 means unlimited)
MAX_RATE = 1_000_000.0
MAX_ROWS = 1_000_000_000
MAX_FREE_BYTES = 1 << 60  # 1 EiB: any real disk; keeps every size well inside SQLite int64
MAX_TOPIC_PREFIX_BYTES = 1024
PASSWORD_FILE_MAX_BYTES = 64 * 1024
MIN_BATCH_BYTES = 256  # below this a batch holds a reading or two: per-reading is cheaper
MAX_BATCH_BYTES = 16 * 1024 * 1024  # what mqttspool.batch.decode inflates at most


def _zero_or_a_rate(rate: float) -> float:
    if 0 < rate < MIN_RATE:
        raise ValueError(f"must be 0 (unlimited) or at least {MIN_RATE:g} messages/s")
    return rate


Seconds = Annotated[float, Field(ge=0, le=MAX_DURATION_S)]
PositiveSeconds = Annotated[float, Field(gt=0, le=MAX_DURATION_S)]
AgeSeconds = Annotated[float, Field(ge=0, le=MAX_AGE_S)]
Rate = Annotated[float, Field(ge=0, le=MAX_RATE), AfterValidator(_zero_or_a_rate)]


def check_topic_prefix(value: str) -> str:
    """One or more MQTT topic levels that every published topic starts with.

    Wildcards would make the topic unpublishable, ``$`` topics belong to the
    broker (``$SYS``), empty levels and stray whitespace are typos that split
    the topic tree, and a broker closes the connection on a NUL.
    """
    if not value:
        raise ValueError("must not be empty")
    if "+" in value or "#" in value:
        raise ValueError("must not contain the MQTT wildcards '+' or '#'")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ValueError("must not contain control characters (NUL, newline, ...)")
    if value.startswith("$"):
        raise ValueError("must not start with '$' (reserved for broker topics such as $SYS)")
    if "" in value.split("/"):
        raise ValueError("must not have empty levels (a leading, trailing or doubled '/')")
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("must be valid UTF-8") from None
    if size > MAX_TOPIC_PREFIX_BYTES:
        raise ValueError(f"must be at most {MAX_TOPIC_PREFIX_BYTES} bytes")
    return value


TopicPrefix = Annotated[str, AfterValidator(check_topic_prefix)]


def default_device_id() -> str:
    """The host name, reduced to what a topic level may hold."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64]
    return name or "mqttspool"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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
        """The password to send, reading ``password_file`` (which wins) if set.

        Raises :class:`ConfigError` if the file cannot be used (see :func:`read_password_file`).
        """
        if self.password_file:
            return read_password_file(self.password_file)
        secret = self.password.get_secret_value()
        return SecretStr(secret) if secret else None


def read_password_file(path: str) -> SecretStr:
    """The password in ``path`` without its trailing newline(s); never shown in errors.

    Opened non-blocking, so a FIFO or device cannot hang start-up; it must be
    a regular file holding non-empty UTF-8 text. Raises :class:`ConfigError`
    naming ``broker.password_file`` and the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise _password_file_error(
            f'{path} does not exist (create it, or set it to "" to use broker.password)'
        ) from exc
    except OSError as exc:
        raise _password_file_error(f"cannot read {path}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _password_file_error(
                f"{path} is not a regular file (name the file holding the password)"
            )
        data = _read_at_most(fd, PASSWORD_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise _password_file_error(f"cannot read {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > PASSWORD_FILE_MAX_BYTES:
        raise _password_file_error(f"{path} is larger than {PASSWORD_FILE_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # The decoder's message quotes the offending byte: part of the secret.
        raise _password_file_error(f"{path} is not UTF-8 text (save it as UTF-8)") from None
    password = text.rstrip("\r\n")
    if not password:
        raise _password_file_error(f"{path} is empty (write the broker password into it)")
    return SecretStr(password)


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _password_file_error(message: str) -> ConfigError:
    return ConfigError("broker.password_file", [("broker.password_file", message)])


class TopicsConfig(_Section):
    """``[topics]``."""

    prefix: TopicPrefix = "mqttspool"


class SpoolConfig(_Section):
    """``[spool]``: where readings wait and how much of them may pile up."""

    path: str = DEFAULT_SPOOL_PATH
    synchronous: Literal["full", "normal"] = "full"
    max_rows: int = Field(default=10_000_000, ge=1, le=MAX_ROWS)
    max_age: AgeSeconds = 0
    min_free_bytes: int = Field(default=50 * 1024 * 1024, ge=0, le=MAX_FREE_BYTES)
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"

    @field_validator("synchronous", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class BridgeConfig(_Section):
    """``[bridge]``: the drain loop."""

    max_inflight: int = Field(default=500, ge=1, le=65535)
    # Readings a crash or power cut may resend (in flight + acknowledged-not-deleted +
    # deleted-not-fsync'd); deletes are fsync'd before this would be exceeded.
    max_resend: int = Field(default=2000, ge=1, le=1_000_000)
    # Unsynced deletes are fsync'd at least this often (seconds).
    settle_interval: float = Field(default=5, gt=0, le=3600, allow_inf_nan=False)
    live_window: Seconds = 60
    reconnect_min: PositiveSeconds = 1
    reconnect_max: PositiveSeconds = 60
    shutdown_timeout: Seconds = 10
    max_rate: Rate = 0  # messages/s, 0 = unlimited
    live_first: bool = False
    # Added by the bridge (issue 9.16): when the oldest unacknowledged QoS 1 message has
    # waited this long, drop the connection and resend after reconnecting.
    ack_timeout: float = Field(default=30, gt=0, le=86_400, allow_inf_nan=False)
    # Batch payloads (DESIGN.md "Batch payload"): one reading per message, all in
    # zlib batches, or live readings alone and the backlog (replay) in batches.
    payload: Literal["reading", "batch", "mixed"] = "reading"
    batch_max_readings: int = Field(default=1000, ge=1, le=65535)
    batch_max_bytes: int = Field(default=65536, ge=MIN_BATCH_BYTES, le=MAX_BATCH_BYTES)
    batch_linger: float = Field(default=10, ge=0, le=3600, allow_inf_nan=False)
    # Added by ingest (issue 14): hold readings until a consumer receives them.
    require_subscribers: bool = False
    consumer_topic: str = Field(default="", max_length=MAX_TOPIC_PREFIX_BYTES)

    @field_validator("consumer_topic")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError("must be one topic, without + or # wildcards")
        return v

    @model_validator(mode="after")
    def _backoff_order(self) -> BridgeConfig:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be >= reconnect_min")
        return self


class HomeAssistantConfig(_Section):
    """``[homeassistant]``: MQTT discovery."""

    discovery: bool = False
    prefix: TopicPrefix = "homeassistant"


class MetricsConfig(_Section):
    """``[metrics]``: optional Prometheus endpoint."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=1, le=65535)


class IngestMetricsConfig(_Section):
    """``[ingest.metrics]``: ingest's own Prometheus endpoint (``run`` uses ``[metrics]``).

    Its own port, so ``run`` and ``ingest`` on one host with one config do not clash.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9109, ge=1, le=65535)


class IngestConfig(_Section):
    """``[ingest]``: the reference consumer (``mqttspool ingest``)."""

    db: str = Field(default="mqttspool-ingest.db", min_length=1)  # a path or postgresql://
    group: Name = "mqttspool-ingest"  # shared-subscription group
    client_id: str = ""  # default: mqttspool-ingest-<group>-<hostname>
    session_expiry: int = Field(default=DAY_S, ge=60, le=MAX_DURATION_S)
    batch_max: int = Field(default=500, ge=1, le=10_000)  # messages per transaction
    batch_linger: float = Field(default=0.2, gt=0, le=60, allow_inf_nan=False)
    status_interval: PositiveSeconds = 60
    quarantine_max: int = Field(default=1000, ge=1, le=10_000_000)  # refused messages kept
    # Retained {"online": true|false} (a device's bridge.consumer_topic); "{group}" is
    # replaced by ingest.group; "" publishes none. Must lie outside topics.prefix.
    state_topic: str = Field(
        default="mqttspool-ingest/{group}/state", max_length=MAX_TOPIC_PREFIX_BYTES
    )

    @field_validator("state_topic")
    @classmethod
    def _one_topic(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError("must be one topic, without + or # wildcards")
        return v

    metrics: IngestMetricsConfig = Field(default_factory=IngestMetricsConfig)

    def resolved_state_topic(self) -> str:
        """``state_topic`` with ``{group}`` filled in ("" when disabled)."""
        return self.state_topic.replace("{group}", self.group)


class LogConfig(_Section):
    """``[log]``."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


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
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @field_validator("sensors")
    @classmethod
    def _default_sensor_and_unique_names(cls, v: list[SensorConfig]) -> list[SensorConfig]:
        if not v:
            return [SimulatedConfig(name="simulated", interval=10)]
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
        """Only what :func:`load_config` passes: file and environment are layered beforehand
        by :mod:`mqttspool.settings_source`, the rules ``health``'s fast path shares."""
        return (init_settings,)


def config_path_from(cli_path: str | None, environ: Mapping[str, str]) -> Path | None:
    """The TOML file to read: ``-c`` wins over ``MQTTSPOOL_CONFIG``; None means defaults."""
    raw = config_file(cli_path, environ)
    return Path(raw) if raw else None


def _entry_name(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return ""
    name = entry.get("name") or entry.get("type")
    return name if isinstance(name, str) else ""


# What a command uses beyond the settings tree; load_config checks it before a
# command opens or creates anything. check-config and run use everything, so what
# check-config passes, run accepts; `sensors` uses no broker and needs no password file.
USES_BROKER = "broker"  # broker.password_file must be readable
USES_METRICS = "metrics"  # metrics.enabled needs the optional prometheus-client
USES_INGEST_METRICS = "ingest-metrics"  # ingest.metrics.enabled needs it too
USES_EVERYTHING = frozenset({USES_BROKER, USES_METRICS, USES_INGEST_METRICS})
METRICS_INSTALL_HINT = "pip install 'mqttspool[metrics]'"


def load_config(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    uses: Collection[str] = USES_EVERYTHING,
) -> Settings:
    """Load, validate and return the settings; raises :class:`ConfigError` (exit 2).

    Everything is checked here, driver options included, so every command
    fails the same way on the same configuration; of the things outside the
    file (``broker.password_file``, the ``metrics`` extra) only those in
    ``uses`` are checked, so a command validates what it uses.
    """
    environ = os.environ if environ is None else environ
    source = str(path) if path else DEFAULTS_SOURCE
    doc = read_toml(str(path)) if path is not None else {}
    _check_env_keys(environ, source)
    env = env_settings(environ)
    if env:
        source += " + environment"
    raw = layered(doc, env, _is_table)
    sensors = raw.get("sensors")
    names = [_entry_name(e) for e in sensors] if isinstance(sensors, list) else []
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(source, _name_env_vars(config_problems(exc, names), env)) from exc
    problems = unusable(settings, uses)
    if problems:
        raise ConfigError(source, problems)
    return settings


def _is_table(path: tuple[str, ...]) -> bool:
    """Whether the setting at ``path`` is a table or array (given as JSON in one variable)."""
    model: type[BaseModel] = Settings
    for i, part in enumerate(path):
        field = model.model_fields.get(part)
        if field is None:
            return False
        ann = field.annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return i == len(path) - 1 and part == "sensors"
        model = ann
    return True


def unusable(settings: Settings, uses: Collection[str]) -> list[Problem]:
    """What in ``uses`` cannot work with ``settings`` (empty: everything can)."""
    problems: list[Problem] = []
    if USES_BROKER in uses:
        try:
            settings.broker.resolved_password()
        except ConfigError as exc:
            problems.extend(exc.problems)
    if USES_METRICS in uses and settings.metrics.enabled:
        problems.extend(_metrics_extra_missing("metrics.enabled"))
    if USES_INGEST_METRICS in uses and settings.ingest.metrics.enabled:
        problems.extend(_metrics_extra_missing("ingest.metrics.enabled"))
    return problems


def _metrics_extra_missing(field: str) -> list[Problem]:
    """``field`` turns on a Prometheus endpoint: is the optional extra installed?"""
    try:
        import prometheus_client  # noqa: F401, PLC0415 - optional extra, only when enabled
    except ImportError:
        return [(field, f"needs prometheus-client, which is not installed: {METRICS_INSTALL_HINT}")]
    return []


def _name_env_vars(problems: list[Problem], env: EnvSettings) -> list[Problem]:
    """Label each problem whose value came from a ``MQTTSPOOL_*`` variable with its name.

    A bad value from the environment must not look like it came from the file
    (or from the built-in defaults): ``broker.port (MQTTSPOOL_BROKER__PORT): ...``.
    """
    out: list[Problem] = []
    for where, message in problems:
        field = where.split(" ", 1)[0].split(":", 1)[0]
        names = [
            var
            for path, (var, _) in env.items()
            if (setting := ".".join(path)) == field
            or setting.startswith(f"{field}.")
            or field.startswith(f"{setting}.")
        ]
        out.append((f"{where} ({', '.join(sorted(names))})" if names else where, message))
    return out


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


def config_problems(exc: ValidationError, sensor_names: Sequence[str] = ()) -> list[Problem]:
    """A configuration error as problems; sensor entries named: ``sensors.1 (name "x")``."""
    return [
        (_label_sensor(path, sensor_names), message)
        for path, message in problems_from(exc, unknown=_unknown_key, tags=SENSOR_TYPES)
    ]


def _unknown_key(path: str) -> str:
    if path.startswith("sensors."):
        return "unknown option for this sensor type (see docs/sensors.md)"
    return "unknown key (check the spelling; see config/mqttspool.toml)"


def _label_sensor(path: str, names: Sequence[str]) -> str:
    """``sensors.1.address`` -> ``sensors.1 (name "bme"): address``."""
    parts = path.split(".", 2)
    if len(parts) < 2 or parts[0] != "sensors" or not parts[1].isdigit():
        return path
    index = int(parts[1])
    name = names[index] if index < len(names) else ""
    entry = f"sensors.{index}" + (f" (name {json.dumps(name)})" if name else "")
    return f"{entry}: {parts[2]}" if len(parts) == 3 else entry


def effective_config(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with secrets masked (for ``check-config``).

    Unset optional values (None) are left out: TOML has no null, and leaving
    them out loads back to the same settings.
    """
    return mask_secrets(settings.model_dump(mode="json", exclude_none=True))


def mask_secrets(data: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """``data`` with every non-empty secret (``password``, ``token``...) replaced by the mask."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, Mapping):
            out[key] = mask_secrets(value, where)
        elif isinstance(value, list):
            out[key] = [mask_secrets(v, where) if isinstance(v, Mapping) else v for v in value]
        elif is_secret(where):
            out[key] = SECRET_MASK if value else ""
        else:
            out[key] = value
    return out


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
