"""The ``powercut`` pytest fixture (import it into a test module to use it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.ci import unavailable

from .mount import PowerCutMount, PowerCutUnavailableError, check_available

__all__ = ["powercut"]


@pytest.fixture
def powercut(tmp_path: Path) -> Iterator[PowerCutMount]:
    """A mounted, empty power-cut "disk"; unmounted at teardown.

    Skips without FUSE -- or fails when CI is "true", so CI cannot pass by skipping.
    """
    try:
        check_available()
    except PowerCutUnavailableError as exc:
        unavailable(str(exc))
    fs = PowerCutMount(tmp_path / "powercut")
    fs.mount()
    try:
        yield fs
    finally:
        fs.unmount()
