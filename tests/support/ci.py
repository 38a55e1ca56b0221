"""One rule for a missing tool or privilege: a skip on a workstation, a failure in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when ``CI`` is "true" (any case, surrounding blanks ignored)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip the test -- or fail it when :func:`in_ci`, so CI cannot pass by skipping."""
    if in_ci():
        pytest.fail(f"{reason} — required when CI=true", pytrace=False)
    pytest.skip(reason)
