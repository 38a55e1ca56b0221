"""Where the settings come from, in the standard library only: the one home of the rules.

Precedence, highest first: ``MQTTSPOOL_<SECTION>__<KEY>`` environment
variables (any letter case), the TOML file (``-c FILE``, else
``MQTTSPOOL_CONFIG``), the built-in defaults. :func:`layered` merges the
first two into one nested dict. :mod:`mqttspool.config` validates that dict
with pydantic; ``mqttspool health``'s fast path (:mod:`mqttspool.health`)
resolves ``spool.path`` from the same functions without importing pydantic,
which costs a Raspberry Pi ~300 ms of CPU every few seconds under Docker's
HEALTHCHECK. The global command-line options are declared here too, for
argparse and for the fast path's small parser alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mqttspool.errors import ConfigError

ENV_PREFIX = "MQTTSPOOL_"
CONFIG_ENV = "MQTTSPOOL_CONFIG"
ENV_DELIMITER = "__"
DEFAULTS_SOURCE = "built-in defaults"
DEFAULT_SPOOL_PATH = "mqttspool.db"

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
# Options accepted before and after the subcommand: flags -> allowed values (None: any).
GLOBAL_OPTIONS: dict[tuple[str, ...], tuple[str, ...] | None] = {
    ("-c", "--config"): None,
    ("--log-level",): LOG_LEVELS,
    ("--log-format",): LOG_FORMATS,
}

EnvSettings = dict[tuple[str, ...], tuple[str, str]]  # setting path -> (variable, value)


def config_file(cli_path: str | None, environ: Mapping[str, str]) -> str | None:
    """The TOML file to read: ``-c`` wins over ``MQTTSPOOL_CONFIG``; None means defaults."""
    return cli_path or environ.get(CONFIG_ENV) or None


def read_toml(path: str) -> dict[str, Any]:
    """The parsed file; :class:`ConfigError` names the file and what is wrong with it."""
    import tomllib  # noqa: PLC0415 - ~8 ms; health without a config file never needs it

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(path, [("", f"config file {path} does not exist")]) from exc
    except OSError as exc:
        raise ConfigError(path, [("", f"cannot read {path}: {exc.strerror}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [("", f"{path} is not valid TOML: {exc}")]) from exc


def env_settings(environ: Mapping[str, str]) -> EnvSettings:
    """Every ``MQTTSPOOL_*`` variable but ``MQTTSPOOL_CONFIG``, keyed by its lower-case path."""
    out: EnvSettings = {}
    for name in sorted(environ):  # sorted: of two spellings of one variable, one rule wins
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper != CONFIG_ENV:
            path = tuple(name[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER))
            out[path] = (name, environ[name])
    return out


def layered(
    doc: Mapping[str, Any],
    env: EnvSettings,
    is_json: Callable[[tuple[str, ...]], bool] = lambda path: False,
) -> dict[str, Any]:
    """``doc`` (the file) with ``env`` laid over it; values where ``is_json`` says so are JSON.

    A whole table or array (``MQTTSPOOL_SPOOL='{"path": "x.db"}'``) is JSON, as
    in pydantic-settings; shorter paths are applied first, so a single key
    still wins over the table it is in.
    """
    out = _copy_tables(doc)
    for path, (name, value) in sorted(env.items(), key=lambda item: len(item[0])):
        table = out
        for part in path[:-1]:
            inner = table.get(part)
            table[part] = inner = inner if isinstance(inner, dict) else {}
            table = inner
        table[path[-1]] = _json(name, value) if is_json(path) else value
    return out


def _copy_tables(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_tables(v) if isinstance(v, Mapping) else v for k, v in doc.items()}


def _json(name: str, value: str) -> Any:
    import json  # noqa: PLC0415 - only for a whole table given as one variable

    try:
        return json.loads(value)
    except ValueError as exc:
        raise ConfigError("environment", [(name, f"not valid JSON: {exc}")]) from exc
