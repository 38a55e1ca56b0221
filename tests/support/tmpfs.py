"""A small tmpfs for disk-full tests (mounting needs root, as CI and these machines have)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.ci import in_ci, unavailable


@contextmanager
def small_tmpfs(root: Path, size: str, fallback: bool = False) -> Iterator[bool]:
    """Mount a ``size`` tmpfs on ``root`` (created); yields whether it is mounted.

    Without the privilege to mount: a test failure in CI, else a skip -- or, with
    ``fallback``, ``False`` so the caller can simulate a full disk another way.
    """
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        if not fallback or in_ci():
            unavailable(f"cannot mount a tmpfs (needs root): {proc.stderr.strip()}")
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)
