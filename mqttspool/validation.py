"""The one translation of a pydantic ``ValidationError`` into readable problems.

Configuration, enqueued lines and sampled readings are all validated by
pydantic; every caller turns the error into ``(field path, message)`` pairs
here, so the wording (``field required``, ``(got 3)``, masked secrets, hex
addresses) is the same everywhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

SECRET_MASK = "********"  # noqa: S105 - the mask, not a secret
SECRET_KEYS = frozenset({"password", "token", "secret"})
Problem = tuple[str, str]


def unknown_field(path: str) -> str:
    """Default message for a key no model declares."""
    return "unknown field"


def problems_from(
    exc: ValidationError,
    *,
    unknown: Callable[[str], str] = unknown_field,
    tags: Collection[str] = (),
) -> list[Problem]:
    """Every error of ``exc`` as ``(path, message)``, in pydantic's order.

    ``path`` joins the location with dots (``sensors.0.address``); elements in
    ``tags`` (discriminated-union tags such as a sensor ``type``) are left out.
    ``unknown(path)`` words the message for an unknown key. The bad value is
    appended as ``(got ...)``: masked for secret fields, in hex for addresses.
    """
    problems: list[Problem] = []
    for err in exc.errors():
        path = ".".join(_field_name(part) for part in err["loc"] if part not in tags)
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            problems.append(_bad_tag(path, err))
            continue
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = unknown(path)
        elif err["type"] == "missing":
            message = "field required"
        elif err["loc"] and not _table_rule(err):
            message = f"{message} (got {_shown(path, err['input'])})"
        problems.append((path, message))
    return problems


def _bad_tag(path: str, err: ErrorDetails) -> Problem:
    """A discriminated union's tag (e.g. a sensor ``type``) is missing or unknown."""
    ctx = err.get("ctx", {})
    field = str(ctx.get("discriminator", "type")).strip("'")
    path = f"{path}.{field}" if path else field
    if err["type"] == "union_tag_not_found":
        return path, "field required"
    expected = str(ctx.get("expected_tags", "")).replace("'", "")
    return path, f"must be one of {expected} (got {_shown(path, ctx.get('tag'))})"


def _field_name(part: str | int) -> str:
    # An unknown key is the input's own text: quote anything that is not a plain
    # name, so a key holding a newline cannot forge a "line N:" report.
    text = str(part)
    return text if text.isascii() and text.isprintable() and len(text) <= 64 else repr(text[:60])


def _table_rule(err: ErrorDetails) -> bool:
    """A rule over a whole table names its fields itself; "(got a table)" adds nothing."""
    return isinstance(err.get("input"), dict) and err["type"] in ("value_error", "assertion_error")


def is_secret(path: str) -> bool:
    """True for fields whose values are never shown: ``password``, ``api_token``, ...

    ``password_file`` is not one: it holds a path, and the path helps.
    """
    suffixes = tuple(f"_{key}" for key in SECRET_KEYS)
    return any(part in SECRET_KEYS or part.endswith(suffixes) for part in path.split("."))


def _shown(path: str, value: Any) -> str:
    if is_secret(path):
        return SECRET_MASK
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, int) and not isinstance(value, bool) and path.endswith("address"):
        return f"0x{value:02x}"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # inf, nan: as written in TOML (JSON would say Infinity)
    if not isinstance(value, str | int | float | list | tuple | type(None)):
        return str(value)  # a stand-in such as reading.HugeInteger describes itself
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (ValueError, RecursionError):  # an int past the digit limit, nesting too deep
        text = f"<{type(value).__name__}>"
    # JSON leaves U+0085, U+2028 and other unprintables raw: escape them, so a
    # value can never break (or forge) a report line in any reader.
    text = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)
    return text if len(text) <= 80 else text[:77] + "..."
