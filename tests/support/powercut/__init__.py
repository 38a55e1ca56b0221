"""A FUSE filesystem that loses everything not fsync'd at a "cut", for power-cut tests.

:mod:`support.powercut.fs` is the server (its docstring states the durability model),
:mod:`support.powercut.mount` mounts it from a test and cuts it.
"""

from .mount import PowerCutMount, PowerCutUnavailableError, check_available

__all__ = ["PowerCutMount", "PowerCutUnavailableError", "check_available"]
