"""Subcommands that need the broker, sensors or the daemon (run, drain, watch, health, sensors).

Each later feature registers its subcommand here so ``cli.py`` stays small.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from mqttspool.config import Settings

Handler = Callable[[argparse.Namespace, Settings], int]
Add = Callable[[str, Handler, str], argparse.ArgumentParser]


def register(add: Add) -> None:
    """Add the runtime subcommands to the parser."""
    del add  # filled in by the bridge, sensor and deployment features
