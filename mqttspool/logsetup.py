"""Logging to stderr, one line per event, as text or JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


class TextFormatter(logging.Formatter):
    """``2026-11-26T00:40:00.123Z INFO mqttspool.bridge: message``."""

    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        """One line; exceptions are folded onto it."""
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        line = f"{ts}.{int(record.msecs):03d}Z {record.levelname} {record.name}: "
        line += record.getMessage()
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg."""

    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        """Serialise the record."""
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"
        doc = {
            "ts": ts,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Configure the root logger (idempotent: replaces earlier handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    logging.getLogger("peewee").setLevel(logging.WARNING)
