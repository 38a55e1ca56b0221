"""The consumer contract's bounds (DESIGN.md, "What a consumer accepts") and their checks.

Every check raises :class:`WireError` naming the field, so a consumer can say
exactly what was wrong with a message and set it aside.
"""

from __future__ import annotations

import math
import re
from typing import Any

from mqttspool.errors import ReadingError

MAX_INT64 = 2**63 - 1  # seq and every counter: what a SQL BIGINT holds
MAX_UNIT_CHARS = 16
MAX_NAME_CHARS = 64
MAX_EPOCH_CHARS = 32
MAX_MESSAGE_BYTES = 64 * 1024  # a per-reading payload or a spool snapshot (~250 bytes each)
MAX_INFLATED_BYTES = 16 * 1024 * 1024  # a batch's decompression bomb stops here
MAX_BATCH_READINGS = 65535  # bridge.batch_max_readings' upper bound
# Year 1 and year 9999 (end) in microseconds since the Unix epoch: what a datetime holds.
MIN_TS_US = -62_135_596_800_000_000
MAX_TS_US = 253_402_300_799_999_999

NAME_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_NAME_CHARS}}}")
EPOCH_RE = re.compile(rf"[0-9a-f]{{1,{MAX_EPOCH_CHARS}}}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class WireError(ReadingError):
    """A message breaks the wire contract; ``field`` names what is wrong (``""``: the whole)."""


def is_int(x: Any) -> bool:
    """A JSON integer (``bool`` is not one)."""
    return isinstance(x, int) and not isinstance(x, bool)


def check_name(value: Any, field: str) -> str:
    """``value`` if it is a name ``[A-Za-z0-9_-]{1,64}``."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise WireError(field, "must be a name of 1-64 characters [A-Za-z0-9_-]")
    return value


def check_epoch(value: Any, field: str = "epoch") -> str:
    """``value`` if it is an epoch: 1-32 characters ``[0-9a-f]``."""
    if not isinstance(value, str) or not EPOCH_RE.fullmatch(value):
        raise WireError(field, "must be 1-32 characters [0-9a-f]")
    return value


def check_seq(value: Any, field: str = "seq") -> int:
    """``value`` if it is a seq: an integer 1..2^63-1."""
    if not is_int(value) or not 1 <= value <= MAX_INT64:
        raise WireError(field, f"must be an integer 1..{MAX_INT64}")
    return int(value)


def check_counter(value: Any, field: str) -> int:
    """``value`` if it is a count: an integer 0..2^63-1."""
    if not is_int(value) or not 0 <= value <= MAX_INT64:
        raise WireError(field, f"must be an integer 0..{MAX_INT64}")
    return int(value)


def check_unit(value: Any, field: str = "unit") -> str | None:
    """``value`` if it is a unit: null, or at most 16 characters without control characters."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_UNIT_CHARS:
        raise WireError(field, f"must be null or a string of at most {MAX_UNIT_CHARS} characters")
    if _CONTROL.search(value):
        raise WireError(field, "must not contain control characters (NUL, newline, ...)")
    return value


def check_value(value: Any, field: str = "value") -> float:
    """``value`` as a float if it is a finite JSON number."""
    if not is_int(value) and not isinstance(value, float):
        raise WireError(field, "must be a finite number")
    try:
        number = float(value)
    except OverflowError:
        raise WireError(field, "must be a finite number (too large for a float)") from None
    if not math.isfinite(number):
        raise WireError(field, "must be a finite number (NaN and infinity are rejected)")
    return number


def check_ts_us(value: int, field: str = "ts") -> int:
    """``value`` if it lies in years 1..9999 (UTC)."""
    if not MIN_TS_US <= value <= MAX_TS_US:
        raise WireError(field, "must lie in years 1..9999")
    return value


def check_flag(value: Any, field: str) -> bool:
    """``value`` if it is a JSON boolean."""
    if not isinstance(value, bool):
        raise WireError(field, "must be a boolean")
    return value
