"""The ``mqttspool`` command line: :mod:`~mqttspool.cli.app` (parser, spool commands)
and :mod:`~mqttspool.cli.runtime` (commands that talk to the broker or run threads)."""

from mqttspool.cli.app import main

__all__ = ["main"]
