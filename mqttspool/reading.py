"""Validated readings: the producer side's model, timestamps in microseconds, the id.

A :class:`Reading` is what producers hand to the spool. A :class:`StoredReading`
is a reading with its spool ``seq``; :func:`mqttspool.wire.payload.render_payload`
turns it into the compact JSON documented in DESIGN.md, ``id = device:epoch:seq``,
where ``epoch`` is the epoch the row was spooled in (``Spool.epoch_of(seq)``; a
spool begins a new one after an unclean stop at ``synchronous = "normal"``).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
)

from mqttspool.errors import ReadingError
from mqttspool.validation import problems_from

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]


class Reading(BaseModel):
    """One measurement: validated, immutable, timestamped in UTC."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: Name
    sensor: Name
    metric: Name
    value: float
    unit: Annotated[StrictStr, Field(max_length=16)] | None = None
    ts: datetime
    time_synced: StrictBool = True

    @field_validator("value", mode="before")
    @classmethod
    def _value_is_number(cls, v: Any) -> Any:
        # Strict on type (no "1.5" strings, no booleans), finite on value.
        if isinstance(v, HugeInteger):
            raise ValueError("must be a finite number")
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError("must be a number")
        try:
            number = float(v)
        except OverflowError:
            raise ValueError("must be a finite number (too large for a float)") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number (NaN and infinity are rejected)")
        return number

    @field_validator("unit")
    @classmethod
    def _unit_printable(cls, v: str | None) -> str | None:
        # The consumer contract refuses control characters (NUL: PostgreSQL text cannot hold it).
        if v is not None and any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in v):
            raise ValueError("must not contain control characters (NUL, newline, ...)")
        return v

    @field_validator("ts", mode="before")
    @classmethod
    def _ts_not_bool(cls, v: Any) -> Any:
        # Strict: pydantic would read numbers as Unix seconds *or* milliseconds
        # depending on their size; a reading's time must not be a guess.
        if not isinstance(v, str | datetime):
            raise ValueError("must be an ISO 8601 timestamp with a timezone")
        return v

    @field_validator("ts")
    @classmethod
    def _ts_is_aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError("timestamp must include a timezone (e.g. 2026-11-26T00:40:00Z)")
        try:
            return v.astimezone(UTC)
        except OverflowError:
            # e.g. 9999-12-31T23:59:59-01:00 is year 10000 in UTC.
            raise ValueError("out of range: the time in UTC must lie in years 1..9999") from None

    @property
    def ts_us(self) -> int:
        """Timestamp as integer microseconds since the Unix epoch (UTC)."""
        return to_us(self.ts)


class HugeInteger:
    """A JSON integer with more digits than any finite float has, kept as its digit count.

    :func:`load_json` puts one in place of such an integer, so a line with a
    5,000-digit number is a validation error naming its field instead of
    Python's int-string limit ``ValueError`` (or an ``OverflowError`` in
    ``float()``) escaping from the parser.
    """

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __str__(self) -> str:
        return f"an integer of {self.digits} digits"


MAX_INTEGER_DIGITS = 330  # float's maximum, 1.8e308, has 309 digits


def _parse_int(text: str) -> int | HugeInteger:
    digits = len(text) - text.startswith("-")
    return HugeInteger(digits) if digits > MAX_INTEGER_DIGITS else int(text)


# One decoder for all: json.loads with keywords would build one per call.
_DECODER = json.JSONDecoder(parse_int=_parse_int)


def load_json(text: str | bytes) -> Any:
    """``json.loads`` that fails only with :class:`ReadingError`, whatever the input.

    Translated: syntax errors, invalid UTF-8 (bytes), nesting too deep for the
    parser (``RecursionError``); integers too long for a float become
    :class:`HugeInteger` so validation can name the field.
    """
    try:
        return _DECODER.decode(text if isinstance(text, str) else text.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise ReadingError("", f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    except UnicodeDecodeError as exc:
        raise ReadingError("", f"not valid UTF-8 (at byte {exc.start + 1})") from exc
    except RecursionError as exc:
        raise ReadingError("", "not valid JSON (nested too deeply)") from exc


def to_us(ts: datetime) -> int:
    """Convert an aware datetime to integer microseconds since the epoch."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(ts_us: int) -> datetime:
    """Inverse of :func:`to_us`."""
    return _EPOCH + timedelta(microseconds=ts_us)


def format_ts(ts_us: int) -> str:
    """Render microseconds as ISO 8601 UTC with a ``Z``; milliseconds unless finer is needed."""
    seconds, frac = divmod(ts_us, 1_000_000)
    base = _second_text(seconds)
    if frac % 1000 == 0:
        return f"{base}.{frac // 1000:03d}Z"
    return f"{base}.{frac:06d}Z"


@functools.lru_cache(maxsize=64)
def _second_text(seconds: int) -> str:
    # Cached: the readings of a round (and of a backlog) share their second, and
    # building the datetime costs more than the rest of a payload.
    dt = from_us(seconds * 1_000_000)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    )


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A reading as it sits in the spool, identified by its ``seq``."""

    seq: int
    device: str
    sensor: str
    metric: str
    value: float
    unit: str | None
    ts_us: int
    time_synced: bool


def reading_id(device: str, epoch: str, seq: int) -> str:
    """The stable message id a consumer dedupes on."""
    return f"{device}:{epoch}:{seq}"


def validate_reading(doc: dict[str, Any]) -> Reading:
    """Validate a mapping into a :class:`Reading`; the error names the first bad field."""
    try:
        return Reading.model_validate(doc)
    except ValidationError as exc:
        raise reading_error_from(exc) from exc


def reading_error_from(exc: ValidationError) -> ReadingError:
    """Turn a pydantic error into a one-line :class:`ReadingError` (first problem)."""
    field, message = problems_from(exc)[0]
    return ReadingError(field, message)
