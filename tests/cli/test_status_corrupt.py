"""``mqttspool status`` on a corrupt spool: a clear message and exit 1, the file left alone."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from support.daemon import mqttspool_env, run_cli

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading, from_us
from mqttspool.spool import open_spool


def _corrupt_spool(path: Path, where: str) -> str:
    spool = open_spool(SpoolConfig(path=str(path), min_free_bytes=0))
    ts = from_us(1_700_000_000_000_000)
    spool.append(
        [Reading(device="d", sensor="s", metric="m", value=float(i), ts=ts) for i in range(3000)]
    )
    spool.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with path.open("r+b") as fh:
        if where == "schema":  # page 1 past the header: the file cannot even be attached
            fh.seek(100)
            fh.write(b"\xa5" * 3000)
        else:  # the last pages: it opens, reading the rows fails
            size = fh.seek(0, 2)
            fh.seek(size - 8192)
            fh.write(b"\xa5" * 8192)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["status"], "schema"),
        (["status", "--json"], "schema"),
        (["status"], "rows"),
        (["dead-letters", "list"], "schema"),  # reads no queued row: only "schema" can fail it
    ],
)
def test_a_read_only_command_on_a_corrupt_spool_says_so_and_changes_nothing(
    tmp_path: Path, where: str, args: list[str]
) -> None:
    path = tmp_path / "spool.db"
    digest = _corrupt_spool(path, where)
    result = run_cli(args, mqttspool_env(path, 1))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"mqttspool: error: spool {path}: ")
    assert "malformed" in line and "`mqttspool run`" in line  # what is wrong, what to do
    # Read-only: never quarantined or salvaged behind a daemon's back.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool.db"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
