"""The settings tree: one pydantic model per TOML section, their ranges and topic rules.

:class:`Settings` is the whole tree; :mod:`mqttspool.config.loading` fills it
from the file and the environment.
"""

from __future__ import annotations

import re
import socket
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mqttspool.config.password import read_password_file
from mqttspool.sensor_config import Name, SensorConfig, SimulatedConfig
from mqttspool.settings_source import DEFAULT_SPOOL_PATH, ENV_PREFIX
from mqttspool.wire.bounds import MAX_INFLATED_BYTES

DAY_S = 86_400
MAX_DURATION_S = 30 * DAY_S  # timeouts, backoff, windows: a month is already absurd
MAX_AGE_S = 365 * DAY_S  # how old a queued reading may get: a year of outage is plausible
MIN_RATE = 1e-6  # one message per ~11.6 days; slower rates are typos (0 means unlimited)
MAX_RATE = 1_000_000.0
MAX_ROWS = 1_000_000_000
MAX_FREE_BYTES = 1 << 60  # 1 EiB: any real disk; keeps every size well inside SQLite int64
MAX_TOPIC_PREFIX_BYTES = 1024
MIN_BATCH_BYTES = 256  # below this a batch holds a reading or two: per-reading is cheaper
MAX_BATCH_BYTES = MAX_INFLATED_BYTES  # what a consumer's batch decode inflates at most


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


def _one_topic(value: str) -> str:
    if "+" in value or "#" in value:
        raise ValueError("must be one topic, without + or # wildcards")
    return value


# One topic to publish or subscribe to exactly ("" where a setting allows none).
OneTopic = Annotated[str, Field(max_length=MAX_TOPIC_PREFIX_BYTES), AfterValidator(_one_topic)]


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


DEFAULT_MAX_RESEND = 2000
MAX_RESEND = 1_000_000
BATCH_RESEND_WINDOW = 20  # Mosquitto's default Receive Maximum (max_inflight_messages)


class BridgeConfig(_Section):
    """``[bridge]``: the drain loop."""

    max_inflight: int = Field(default=500, ge=1, le=65535)
    # Readings a crash or power cut may resend (in flight + acknowledged-not-deleted +
    # deleted-not-fsync'd); deletes are fsync'd before this would be exceeded. Unset:
    # see _resend_default (it depends on the payload mode).
    max_resend: int = Field(default=DEFAULT_MAX_RESEND, ge=1, le=MAX_RESEND)
    # Unsynced deletes are fsync'd at least this often (seconds).
    settle_interval: float = Field(default=5, gt=0, le=3600, allow_inf_nan=False)
    live_window: Seconds = 60
    reconnect_min: PositiveSeconds = 1
    reconnect_max: PositiveSeconds = 60
    shutdown_timeout: Seconds = 10
    max_rate: Rate = 0  # messages/s, 0 = unlimited
    live_first: bool = False
    # When the oldest unacknowledged QoS 1 message has waited this long, drop the
    # connection and resend after reconnecting.
    ack_timeout: float = Field(default=30, gt=0, le=86_400, allow_inf_nan=False)
    # Batch payloads (DESIGN.md "Batch payload"): one reading per message, all in
    # zlib batches, or live readings alone and the backlog (replay) in batches.
    payload: Literal["reading", "batch", "mixed"] = "reading"
    batch_max_readings: int = Field(default=1000, ge=1, le=65535)
    batch_max_bytes: int = Field(default=65536, ge=MIN_BATCH_BYTES, le=MAX_BATCH_BYTES)
    batch_linger: float = Field(default=10, ge=0, le=3600, allow_inf_nan=False)
    # Hold readings until a consumer receives them (the gate; see mqttspool.gate).
    require_subscribers: bool = False
    consumer_topic: OneTopic = ""

    @model_validator(mode="after")
    def _backoff_order(self) -> BridgeConfig:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be >= reconnect_min")
        return self

    @model_validator(mode="after")
    def _resend_default(self) -> BridgeConfig:
        """``max_resend`` when not set: 2000 for one reading per message; with batches
        (``batch``, ``mixed``) one full window of them at MQTT's usual Receive Maximum,
        20 x ``batch_max_readings`` (20,000 by default), so a catch-up is bound by the
        link's bandwidth, not by round trips. A resent batch reading costs ~5 bytes on
        the wire, a resent single message ~200: the larger bound resends fewer bytes.

        Recomputed whenever the payload mode changes (set without marking the field as
        set, so an explicit value always wins)."""
        if "max_resend" not in self.model_fields_set:
            default = DEFAULT_MAX_RESEND
            if self.payload != "reading":
                default = min(MAX_RESEND, BATCH_RESEND_WINDOW * self.batch_max_readings)
            object.__setattr__(self, "max_resend", default)
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
    state_topic: OneTopic = "mqttspool-ingest/{group}/state"

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
