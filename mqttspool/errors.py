"""The exception tree of mqttspool.

Every error the package raises derives from :class:`MqttspoolError`. Errors
carry data (paths, field paths, reason codes) as attributes so callers never
parse messages; third-party errors are translated at the module boundary with
``raise ... from exc``.
"""

from __future__ import annotations

from pathlib import Path


class MqttspoolError(Exception):
    """Base class of every error raised by mqttspool."""


class ConfigError(MqttspoolError):
    """The configuration is invalid; ``problems`` lists ``(field_path, message)``."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{path}: {msg}" if path else msg for path, msg in problems]
        super().__init__(f"invalid configuration ({source}):\n  " + "\n  ".join(lines))


class ReadingError(MqttspoolError):
    """A reading failed validation; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class SpoolError(MqttspoolError):
    """The spool file cannot be used; ``path`` names it."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"spool {self.path}: {message}")


class NotASpoolError(SpoolError):
    """The file exists but is not an mqttspool database; it is never touched."""


class SpoolCorruptError(SpoolError):
    """SQLite reported corruption in an mqttspool spool; it must be salvaged."""


class SpoolGoneError(SpoolError):
    """The spool file was deleted or replaced while open; ``stranded`` readings are in the old one.

    Writing on would put readings where nothing reads them, so the daemon must
    stop (exit 1) and be restarted on the file that is there now.
    """

    def __init__(self, path: Path | str, message: str, stranded: int | None) -> None:
        self.stranded = stranded
        super().__init__(path, message)


class SpoolFullError(SpoolError):
    """The disk (or a configured bound) refused the write; ``dropped`` readings were counted."""

    def __init__(self, path: Path | str, message: str, dropped: int) -> None:
        self.dropped = dropped
        super().__init__(path, message)


class SensorError(MqttspoolError):
    """A sensor read failed; ``sensor`` is its configured name."""

    def __init__(self, sensor: str, message: str, errno: int | None = None) -> None:
        self.sensor = sensor
        self.errno = errno
        super().__init__(f"sensor {sensor}: {message}")
