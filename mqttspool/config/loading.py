"""Loading and validating: file + environment into :class:`Settings`, every problem named.

Precedence, highest first: ``MQTTSPOOL_<SECTION>__<KEY>`` environment
variables, the TOML file (``-c FILE`` or ``MQTTSPOOL_CONFIG``), built-in
defaults. Unknown keys are errors, in the file and in the environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mqttspool.config.sections import Settings
from mqttspool.errors import ConfigError
from mqttspool.sensor_config import SENSOR_TYPES
from mqttspool.settings_source import (
    CONFIG_ENV,
    DEFAULTS_SOURCE,
    ENV_PREFIX,
    EnvSettings,
    config_file,
    env_settings,
    layered,
    read_toml,
)
from mqttspool.validation import Problem, problems_from


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
