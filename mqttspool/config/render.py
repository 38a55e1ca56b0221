"""The effective configuration as ``check-config`` prints it: plain data, secrets masked, TOML."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mqttspool.config.sections import Settings
from mqttspool.validation import SECRET_MASK, is_secret


def effective_config(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with secrets masked (for ``check-config``).

    Unset optional values (None) are left out: TOML has no null, and leaving
    them out loads back to the same settings.
    """
    return mask_secrets(settings.model_dump(mode="json", exclude_none=True))


def mask_secrets(data: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """``data`` with every non-empty secret (``password``, ``token``...) replaced by the mask."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, Mapping):
            out[key] = mask_secrets(value, where)
        elif isinstance(value, list):
            out[key] = [mask_secrets(v, where) if isinstance(v, Mapping) else v for v in value]
        elif is_secret(where):
            out[key] = SECRET_MASK if value else ""
        else:
            out[key] = value
    return out


def to_toml(data: Mapping[str, Any]) -> str:
    """Render the effective config as TOML (tables and arrays of tables only)."""
    lines: list[str] = []
    _toml_table(lines, [], data)
    return "\n".join(lines).strip() + "\n"


def _toml_table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict | list)}
    scalars |= {
        k: v
        for k, v in table.items()
        if isinstance(v, list) and not all(isinstance(x, dict) for x in v)
    }
    if path and scalars:
        lines.append(f"\n[{'.'.join(path)}]")
    lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
    for key, value in table.items():
        if isinstance(value, dict):
            _toml_table(lines, [*path, key], value)
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            for item in value:
                lines.append(f"\n[[{'.'.join([*path, key])}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value), ensure_ascii=False)
