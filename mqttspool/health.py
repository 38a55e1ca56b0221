"""``mqttspool health``: the heartbeat rules, and a fast path for Docker's HEALTHCHECK.

Docker runs ``mqttspool health`` every few seconds on a Raspberry Pi, where
importing pydantic, pydantic-settings, peewee and paho costs ~300 ms of CPU.
This module imports only the standard library.

:func:`fast_health` answers the common case, "the daemon is healthy", without
building the settings tree: it finds the spool path with the same rules as
:func:`mqttspool.config.load_config` (``-c`` wins over ``MQTTSPOOL_CONFIG``;
``MQTTSPOOL_SPOOL__PATH`` in any letter case wins over ``[spool] path``; else
``mqttspool.db``), reads the heartbeat read-only and judges it with
:func:`judge_heartbeat`, the function ``check_health`` uses too. Whenever the
answer is anything but "healthy", or the input is unusual (other options, a
config file that is not valid TOML, a key or ``MQTTSPOOL_*`` variable that
names no setting, a spool path that is not a string), it returns None and the
normal command line runs and produces the answer, message and exit code,
including exit 2 for a bad configuration. Setting *values* other than
``spool.path`` are not re-validated on a healthy answer: the daemon validated
them when it started.
"""

from __future__ import annotations

import json
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mqttspool.spool.readonly import read_meta_if_ours

HEARTBEAT_S = 5.0
HEARTBEAT_KEY = "heartbeat"
HEARTBEAT_STALE_S = 3 * HEARTBEAT_S + 5
CONFIG_ENV = "MQTTSPOOL_CONFIG"
SPOOL_PATH_ENV = "mqttspool_spool__path"
DEFAULT_SPOOL_PATH = "mqttspool.db"
ENV_PREFIX = "MQTTSPOOL_"

# Every leaf setting, as "section.key" (sensors are an array of open tables).
# tests/test_health.py checks this against the pydantic model tree.
KNOWN_SETTINGS = frozenset(
    {
        "device.id",
        *(
            f"broker.{k}"
            for k in (
                "host",
                "port",
                "protocol",
                "client_id",
                "keepalive",
                "username",
                "password",
                "password_file",
            )
        ),
        *(f"broker.tls.{k}" for k in ("enabled", "ca_file", "cert_file", "key_file", "insecure")),
        "topics.prefix",
        *(
            f"spool.{k}"
            for k in ("path", "synchronous", "max_rows", "max_age", "min_free_bytes", "overflow")
        ),
        *(
            f"bridge.{k}"
            for k in (
                "max_inflight",
                "live_window",
                "reconnect_min",
                "reconnect_max",
                "shutdown_timeout",
                "max_rate",
                "live_first",
                "ack_timeout",
            )
        ),
        "homeassistant.discovery",
        "homeassistant.prefix",
        "metrics.enabled",
        "metrics.host",
        "metrics.port",
        "log.level",
        "log.format",
    }
)
KNOWN_SECTIONS = frozenset(
    {"sensors", *(p.rsplit(".", 1)[0] for p in KNOWN_SETTINGS if "." in p)}
    | {p.split(".", 1)[0] for p in KNOWN_SETTINGS}
)
_VALUE_OPTIONS = frozenset({"-c", "--config", "--log-level", "--log-format"})
_CHOICES = {
    "--log-level": frozenset({"debug", "info", "warning", "error"}),
    "--log-format": frozenset({"text", "json"}),
}


@dataclass(frozen=True)
class Health:
    """Result of ``mqttspool health``."""

    ok: bool
    reason: str


def judge_heartbeat(raw: str | None, now_us: int) -> Health:
    """Healthy while the heartbeat is fresh, the state ``running`` and every thread alive."""
    if raw is None:
        return Health(False, "no heartbeat: the daemon has not run with this spool")
    doc = json.loads(raw)
    age = (now_us - int(doc["wall_us"])) / 1e6
    if doc.get("state") != "running":
        return Health(False, f"daemon is {doc.get('state')} (since {age:.0f} s)")
    if age > HEARTBEAT_STALE_S:
        return Health(False, f"heartbeat is stale ({age:.0f} s old)")
    dead = [name for name, alive in doc.get("threads", {}).items() if not alive]
    if dead:
        return Health(False, f"thread(s) not running: {', '.join(dead)}")
    link = "connected" if doc.get("connected") else "not connected (spooling)"
    return Health(True, f"running, heartbeat {age:.1f} s old, broker {link}")


def fast_health(argv: Sequence[str], environ: Mapping[str, str]) -> int | None:
    """Print and return 0 when ``argv`` is a plain ``health`` and the daemon is healthy.

    Returns None when the full command line must answer (see the module doc).
    """
    config = _health_config_option(argv)
    if config is None:
        return None
    spool_path = _spool_path(config or environ.get(CONFIG_ENV) or None, environ)
    if spool_path is None:
        return None
    raw = _read_heartbeat_if_ours(Path(spool_path))
    if raw is None:
        return None
    try:
        health = judge_heartbeat(raw, time.time_ns() // 1000)
    except (ValueError, KeyError, TypeError):
        return None
    if not health.ok:
        return None
    sys.stdout.write(f"healthy: {health.reason}\n")
    return 0


def _health_config_option(argv: Sequence[str]) -> str | None:
    """``-c`` value ("" if absent) when argv is ``health`` plus global options; else None."""
    config = ""
    command_seen = False
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if arg == "health" and not command_seen:
            command_seen = True
            i += 1
            continue
        if name in _VALUE_OPTIONS and arg.startswith("--") and eq:
            i += 1
        elif arg in _VALUE_OPTIONS and i + 1 < len(args):
            name, value = arg, args[i + 1]
            i += 2
        else:
            return None  # -cFILE, --help, a typo...: let argparse decide
        if name in _CHOICES and value not in _CHOICES[name]:
            return None
        if name in ("-c", "--config"):
            config = value
    return config if command_seen else None


def _spool_path(config: str | None, environ: Mapping[str, str]) -> str | None:
    """``spool.path`` as load_config would resolve it, or None when unsure."""
    ours = [k for k in environ if k.upper().startswith(ENV_PREFIX)]
    overrides = {k.lower(): environ[k] for k in ours}
    if len(overrides) != len(ours):
        return None  # the same variable in two letter cases: let pydantic-settings decide
    for key in overrides:
        if key == CONFIG_ENV.lower():
            continue
        setting = key[len(ENV_PREFIX) :].replace("__", ".")
        if setting not in KNOWN_SETTINGS:
            return None  # unknown variable (or a whole section as JSON): exit 2 or unusual
    path: Any = DEFAULT_SPOOL_PATH
    if config:
        try:
            with Path(config).open("rb") as fh:
                doc = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError):
            return None
        if not _keys_known(doc):
            return None
        path = doc.get("spool", {}).get("path", path)
    path = overrides.get(SPOOL_PATH_ENV, path)
    return path if isinstance(path, str) else None


def _keys_known(doc: Mapping[str, Any]) -> bool:
    for section, table in doc.items():
        if section == "sensors":
            continue
        if section not in KNOWN_SECTIONS or not isinstance(table, dict):
            return False
        for key, value in table.items():
            if isinstance(value, dict):
                if not _keys_known({f"{section}.{key}": value}):
                    return False
            elif f"{section}.{key}" not in KNOWN_SETTINGS:
                return False
    return True


def _read_heartbeat_if_ours(path: Path) -> str | None:
    """The heartbeat of an mqttspool spool (read-only, no locks, nothing created)."""
    return read_meta_if_ours(path, HEARTBEAT_KEY)
