"""Configuration: one pydantic-settings model tree (TOML file + environment).

- :mod:`~mqttspool.config.sections`: one model per section, :class:`Settings` the tree.
- :mod:`~mqttspool.config.password`: reading ``broker.password_file``.
- :mod:`~mqttspool.config.loading`: :func:`load_config` (file + environment, every
  problem named, precedence) and what a command uses beyond the tree (``USES_*``).
- :mod:`~mqttspool.config.render`: the effective configuration for ``check-config``.
"""

from __future__ import annotations

from mqttspool.config.loading import (
    METRICS_INSTALL_HINT,
    USES_BROKER,
    USES_EVERYTHING,
    USES_INGEST_METRICS,
    USES_METRICS,
    config_path_from,
    config_problems,
    load_config,
    unusable,
)
from mqttspool.config.password import PASSWORD_FILE_MAX_BYTES, read_password_file
from mqttspool.config.render import effective_config, mask_secrets, to_toml
from mqttspool.config.sections import (
    DAY_S,
    MAX_AGE_S,
    MAX_BATCH_BYTES,
    MAX_DURATION_S,
    MAX_FREE_BYTES,
    MAX_RATE,
    MAX_ROWS,
    MAX_TOPIC_PREFIX_BYTES,
    MIN_BATCH_BYTES,
    MIN_RATE,
    AgeSeconds,
    BridgeConfig,
    BrokerConfig,
    DeviceConfig,
    HomeAssistantConfig,
    IngestConfig,
    IngestMetricsConfig,
    LogConfig,
    MetricsConfig,
    PositiveSeconds,
    Rate,
    Seconds,
    Settings,
    SpoolConfig,
    TlsConfig,
    TopicPrefix,
    TopicsConfig,
    check_topic_prefix,
    default_device_id,
)
from mqttspool.settings_source import CONFIG_ENV, ENV_PREFIX

__all__ = [
    "CONFIG_ENV",
    "DAY_S",
    "ENV_PREFIX",
    "MAX_AGE_S",
    "MAX_BATCH_BYTES",
    "MAX_DURATION_S",
    "MAX_FREE_BYTES",
    "MAX_RATE",
    "MAX_ROWS",
    "MAX_TOPIC_PREFIX_BYTES",
    "METRICS_INSTALL_HINT",
    "MIN_BATCH_BYTES",
    "MIN_RATE",
    "PASSWORD_FILE_MAX_BYTES",
    "USES_BROKER",
    "USES_EVERYTHING",
    "USES_INGEST_METRICS",
    "USES_METRICS",
    "AgeSeconds",
    "BridgeConfig",
    "BrokerConfig",
    "DeviceConfig",
    "HomeAssistantConfig",
    "IngestConfig",
    "IngestMetricsConfig",
    "LogConfig",
    "MetricsConfig",
    "PositiveSeconds",
    "Rate",
    "Seconds",
    "Settings",
    "SpoolConfig",
    "TlsConfig",
    "TopicPrefix",
    "TopicsConfig",
    "check_topic_prefix",
    "config_path_from",
    "config_problems",
    "default_device_id",
    "effective_config",
    "load_config",
    "mask_secrets",
    "read_password_file",
    "to_toml",
    "unusable",
]
