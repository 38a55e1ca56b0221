"""A JSON parse that fails only with :class:`WireError`: bounded size, bounded depth.

Python's parser recurses once per nesting level, so ``[[[[...`` 100k deep
would raise ``RecursionError`` (or worse) inside it; the depth is measured
first, without recursion, and a document deeper than its format needs is
refused before it is parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mqttspool.reading import MAX_INTEGER_DIGITS, HugeInteger
from mqttspool.wire.bounds import WireError

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def _parse_int(text: str) -> int | HugeInteger:
    digits = len(text) - text.startswith("-")
    return HugeInteger(digits) if digits > MAX_INTEGER_DIGITS else int(text)


_DECODER = json.JSONDecoder(parse_int=_parse_int)


def nesting_exceeds(text: str, limit: int) -> bool:
    """True if ``text`` nests arrays/objects deeper than ``limit`` (strings skipped)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the cheap bound: never deeper than the number of openers
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        if m.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def load(data: bytes, max_depth: int, what: str, max_bytes: int) -> Any:
    """Parse ``data`` (UTF-8 JSON, at most ``max_bytes``, nesting at most ``max_depth``)."""
    if len(data) > max_bytes:
        raise WireError("", f"{what} is larger than {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("", f"{what} is not valid UTF-8 (at byte {exc.start + 1})") from exc
    if nesting_exceeds(text, max_depth):
        raise WireError("", f"{what} nests deeper than {max_depth} level(s)")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise WireError("", f"{what} is not valid JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError as exc:  # unreachable after the depth check; never escapes
        raise WireError("", f"{what} nests too deeply") from exc


def load_object(data: bytes, max_depth: int, what: str, max_bytes: int) -> dict[str, Any]:
    """:func:`load`, and the document must be a JSON object."""
    doc = load(data, max_depth, what, max_bytes)
    if not isinstance(doc, dict):
        raise WireError("", f"{what} is not a JSON object")
    return doc
