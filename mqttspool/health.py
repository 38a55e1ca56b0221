"""``mqttspool health``: the heartbeat file, its rules, and a fast path for Docker's HEALTHCHECK.

The daemon (``mqttspool run``) writes a small JSON document, the heartbeat,
to ``<spool>.health`` every :data:`HEARTBEAT_S` seconds and a ``stopped``
one on a clean shutdown (:func:`write_heartbeat`). It is not a spool
transaction and is never fsync'd: a lost heartbeat only makes the daemon look
unhealthy for a moment, and an idle daemon must not write its SD card through
SQLite every few seconds. The file is replaced atomically (temp file +
``os.replace``); when the disk is full and no new file can be written, the
existing file (always :data:`HEARTBEAT_BYTES` long) is overwritten in place,
so ``health`` keeps working on a full disk.

:func:`judge_heartbeat` is the one set of rules: healthy while the state is
``running``, the heartbeat fresh, every thread alive, the sampler has
finished a round recently and no message has waited too long for its
acknowledgement. The daemon writes the limits it judged by into the
heartbeat, so ``health`` needs no sensor or bridge settings.

This module imports only the standard library: Docker runs ``mqttspool
health`` every few seconds on a Raspberry Pi, where importing pydantic,
pydantic-settings, peewee and paho costs ~300 ms of CPU. :func:`fast_health`
answers the common case, "the daemon is healthy", without building the
settings tree: it finds the spool path with the same rules as
:func:`mqttspool.config.load_config` (``-c`` wins over ``MQTTSPOOL_CONFIG``;
``MQTTSPOOL_SPOOL__PATH`` in any letter case wins over ``[spool] path``; else
``mqttspool.db``). Whenever the answer is anything but "healthy", or the
input is unusual (other options, a config file that is not valid TOML, a key
or ``MQTTSPOOL_*`` variable that names no setting, a spool path that is not a
string), it returns None and the normal command line runs
(:func:`check_health`) and produces the answer, message and exit code,
including exit 1 for a bad configuration. Setting *values* other than
``spool.path`` are not re-validated on a healthy answer: the daemon validated
them when it started.
"""

from __future__ import annotations

import json
import os
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

HEARTBEAT_S = 5.0  # how often the daemon writes the heartbeat
HEARTBEAT_STALE_S = 3 * HEARTBEAT_S + 5
HEARTBEAT_SUFFIX = ".health"  # the heartbeat file is <spool path>.health
HEARTBEAT_BYTES = 1024  # fixed size, so a full disk can overwrite it in place
READ_ATTEMPTS = 3  # an in-place overwrite can be read half-written: read again
SAMPLER_STUCK_FACTOR = 3.0  # a sampler idle this many sensor intervals is stuck...
SAMPLER_STUCK_MIN_S = 30.0  # ...and never sooner than this
SAMPLER_MAX_WAIT_S = 60.0  # the sampler wakes at least this often (sampler.IDLE_WAIT_S)
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
                "max_resend",
                "settle_interval",
                "live_window",
                "reconnect_min",
                "reconnect_max",
                "shutdown_timeout",
                "max_rate",
                "live_first",
                "ack_timeout",
                "payload",
                "batch_max_readings",
                "batch_max_bytes",
                "batch_linger",
                "require_subscribers",
                "consumer_topic",
            )
        ),
        "homeassistant.discovery",
        "homeassistant.prefix",
        "metrics.enabled",
        "metrics.host",
        "metrics.port",
        *(
            f"ingest.{k}"
            for k in (
                "db",
                "group",
                "client_id",
                "session_expiry",
                "batch_max",
                "batch_linger",
                "status_interval",
            )
        ),
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


@dataclass(frozen=True)
class Heartbeat:
    """What ``<spool>.health`` holds: the daemon's state and the limits it is judged by.

    ``sampler_idle_s`` is the time since the sampler last finished a round,
    ``unacked_for_s`` how long the oldest in-flight message has waited for its
    PUBACK (None: nothing in flight); each is judged against its ``*_limit_s``.
    """

    state: str
    pid: int
    wall_us: int
    threads: dict[str, bool] = field(default_factory=dict)
    connected: bool = False
    sampler_idle_s: float | None = None
    sampler_limit_s: float | None = None
    unacked_for_s: float | None = None
    unacked_limit_s: float | None = None
    readings_paused: str | None = None  # why the consumer gate holds readings back, if it does

    def to_json(self) -> str:
        """Compact JSON."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> Heartbeat:
        """Parse a heartbeat; raises ValueError if it is not one (unknown keys are ignored)."""
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(cls)}
        try:
            beat = cls(**{k: v for k, v in doc.items() if k in known})
        except TypeError as exc:
            raise ValueError(f"not a heartbeat: {exc}") from exc
        if not isinstance(beat.state, str) or not isinstance(beat.wall_us, int):
            raise ValueError("not a heartbeat: state or wall_us has the wrong type")
        return beat


def heartbeat_path(spool_path: str | Path) -> Path:
    """The heartbeat file of the spool at ``spool_path``: ``<spool_path>.health``."""
    return Path(f"{spool_path}{HEARTBEAT_SUFFIX}")


def sampler_stuck_limit(intervals: Sequence[float]) -> float:
    """Seconds without a finished sampling round after which the sampler counts as stuck."""
    # The sampler wakes when a sensor is due, and at least every SAMPLER_MAX_WAIT_S.
    cadence = min([*intervals, SAMPLER_MAX_WAIT_S])
    return max(SAMPLER_STUCK_FACTOR * cadence, SAMPLER_STUCK_MIN_S)


def write_heartbeat(path: Path, beat: Heartbeat) -> None:
    """Write ``beat`` to ``path`` without fsync; raises OSError.

    Every heartbeat has the same size, so once the file exists it is
    overwritten in place: that dirties one page the kernel writes back at its
    own pace (a rename would make the filesystem write a new file every 5 s),
    and needs no new blocks on a full disk. The first one goes to a temporary
    file renamed into place, so a reader never sees a short file; a torn read
    of an overwrite is retried by :func:`read_heartbeat`.
    """
    data = beat.to_json().encode()
    if len(data) >= HEARTBEAT_BYTES:
        raise ValueError(f"heartbeat longer than {HEARTBEAT_BYTES} bytes: {data[:80]!r}...")
    data = data.ljust(HEARTBEAT_BYTES - 1) + b"\n"
    if _overwrite_in_place(path, data):
        return
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _overwrite_in_place(path: Path, data: bytes) -> bool:
    """Overwrite an existing heartbeat of the same size; False when there is none."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return False
    try:
        if os.fstat(fd).st_size != len(data):
            return False
        os.pwrite(fd, data, 0)
        return True
    finally:
        os.close(fd)


def read_heartbeat(path: Path) -> Heartbeat:
    """The heartbeat in ``path``; raises FileNotFoundError, OSError or ValueError."""
    for attempt in range(READ_ATTEMPTS):
        raw = path.read_bytes()
        try:
            return Heartbeat.from_json(raw.decode())
        except ValueError:
            if attempt + 1 == READ_ATTEMPTS:
                raise
            time.sleep(0.01)  # a torn read of an in-place overwrite: the writer is done soon
    raise AssertionError("unreachable")


def check_health(spool_path: str | Path, now_us: int | None = None) -> Health:
    """The answer of ``mqttspool health`` for the spool at ``spool_path``."""
    path = heartbeat_path(spool_path)
    try:
        beat = read_heartbeat(path)
    except FileNotFoundError:
        return Health(False, f"no heartbeat: no daemon has run with spool {spool_path} ({path})")
    except OSError as exc:
        return Health(False, f"cannot read the heartbeat {path}: {exc.strerror}")
    except ValueError as exc:
        return Health(False, f"cannot read the heartbeat {path}: {exc}")
    return judge_heartbeat(beat, time.time_ns() // 1000 if now_us is None else now_us)


def judge_heartbeat(beat: Heartbeat, now_us: int) -> Health:
    """Healthy while running with a fresh heartbeat, live threads, no stuck sampler or window."""
    age = (now_us - beat.wall_us) / 1e6
    if beat.state != "running":
        return Health(False, f"daemon is {beat.state} (since {age:.0f} s)")
    if age > HEARTBEAT_STALE_S:
        return Health(False, f"heartbeat is stale ({age:.0f} s old; PID {beat.pid})")
    dead = [name for name, alive in beat.threads.items() if not alive]
    if dead:
        return Health(False, f"thread(s) not running: {', '.join(dead)}")
    stuck = _over(beat.sampler_idle_s, beat.sampler_limit_s)
    if stuck:
        return Health(False, f"sampler stuck: no sampling round finished for {stuck}")
    stalled = _over(beat.unacked_for_s, beat.unacked_limit_s)
    if stalled:
        return Health(False, f"bridge stalled: a message has been unacknowledged for {stalled}")
    link = "connected" if beat.connected else "not connected (spooling)"
    return Health(True, f"running, heartbeat {age:.1f} s old, broker {link}")


def _over(value: float | None, limit: float | None) -> str:
    """Describe ``value`` and ``limit`` when the value exceeds the limit; empty otherwise."""
    if value is None or limit is None or value <= limit:
        return ""
    return f"{value:.0f} s (limit {limit:g} s)"


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
    health = check_health(spool_path)
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
