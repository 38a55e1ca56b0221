"""The ``mqttspool`` command line: :mod:`~mqttspool.cli.app` (parser, spool commands)
and :mod:`~mqttspool.cli.runtime` (commands that talk to the broker or run threads).

:func:`main` answers a healthy ``mqttspool health`` before importing either
(argparse, logging and the rest are not needed for it): Docker runs it every
few seconds, see :mod:`mqttspool.health`.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    from mqttspool.health import fast_health  # noqa: PLC0415 - standard library only

    fast = fast_health(sys.argv[1:] if argv is None else argv, os.environ)
    if fast is not None:
        return fast
    from mqttspool.cli.app import main as full_main  # noqa: PLC0415 - everything else

    return full_main(argv)


__all__ = ["main"]
