"""What a newcomer meets in the first hour: every command says what happened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from daemon import clean_env, spool_with_backlog


def _into_a_closed_pipe(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``mqttspool ARGS`` with stdout a pipe whose reader has gone (``| head -c 0``)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mqttspool", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    "args",
    [["check-config", "--json"], ["check-config"], ["status", "--json"], ["status"], ["sensors"]],
)
def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "spool.db"
    spool_with_backlog(db, 3)
    env = clean_env(MQTTSPOOL_SPOOL__PATH=str(db))
    code, stderr = _into_a_closed_pipe(args, env, tmp_path)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert code == 1
