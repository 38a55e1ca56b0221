"""config/mqttspool.toml mentions every effective key, read from the settings models.

Each section's keys must appear in that section's table (set, or commented
out like ``device.id``); each sensor type's options in that type's commented
``[[sensors]]`` example. A key added to a model without a line in the example
fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from pydantic import BaseModel

from mqttspool.config import Settings
from mqttspool.sensor_config import SENSOR_MODELS, AdsChannel, SensorBase

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "mqttspool.toml"
TEXT = EXAMPLE.read_text(encoding="utf-8")


def table(name: str) -> str:
    """The lines of table ``[name]`` up to the next table header."""
    match = re.search(rf"^\[{re.escape(name)}\]\n(.*?)(?=^\[|\Z)", TEXT, re.S | re.M)
    assert match, f"config/mqttspool.toml has no [{name}] table"
    return match.group(1)


def mentions(text: str, key: str) -> bool:
    """``key = `` at a line start, set or commented out (``# key = ``)."""
    return re.search(rf"^(# ?)?{re.escape(key)} = ", text, re.M) is not None


def sections(model: type[BaseModel], prefix: str = "") -> dict[str, list[str]]:
    """table name -> its scalar keys, for every nested model of ``model``."""
    found: dict[str, list[str]] = {}
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found.update(sections(kind, f"{prefix}{name}."))
        elif prefix:
            found.setdefault(prefix.rstrip("."), []).append(name)
    return found


def sensor_example(kind: str) -> str:
    """The commented ``[[sensors]]`` example whose ``type`` is ``kind``."""
    match = re.search(
        rf'^# \[\[sensors\]\]\n# type = "{kind}".*?(?=^# \[\[sensors\]\]|^$)', TEXT, re.S | re.M
    )
    assert match, f'config/mqttspool.toml has no commented [[sensors]] example of type "{kind}"'
    return match.group(0)


def test_every_settings_key_is_in_its_table() -> None:
    missing = [
        f"{name}.{key}"
        for name, keys in sections(Settings).items()
        for key in keys
        if not mentions(table(name), key)
    ]
    assert missing == []


def test_every_sensor_option_is_in_its_types_example() -> None:
    missing: list[str] = []
    for model in SENSOR_MODELS:
        kind = get_args(model.model_fields["type"].annotation)[0]
        text = sensor_example(kind)
        for key in model.model_fields:
            table_array = f"# [[sensors.{key}]]" in text  # a list of option tables
            if not (mentions(text, key) or table_array):
                missing.append(f"{kind}.{key}")
        if "channels" in model.model_fields:
            missing += [
                f"{kind}.channels.{key}"
                for key in AdsChannel.model_fields
                if not re.search(rf"^# {key} = ", text, re.M)
            ]
    assert missing == []


def test_the_walk_sees_nested_tables_and_sensor_options() -> None:
    assert "broker.tls" in sections(Settings)
    assert "seed" in SENSOR_MODELS[-1].model_fields and issubclass(SENSOR_MODELS[-1], SensorBase)
