"""The spool's read-only side, without peewee: one meta value for ``mqttspool health``.

Part of the spool layer (the only other module that speaks SQL is
:mod:`mqttspool.spool`). It exists separately because Docker runs
``mqttspool health`` every few seconds and importing peewee (and through the
spool, pydantic) costs more than the whole check should. It opens the file
read-only (``mode=ro``): nothing is created, migrated or locked for writing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

APPLICATION_ID = 0x6D717370  # "mqsp" in the SQLite header, offset 68


def read_meta_if_ours(path: Path, key: str) -> str | None:
    """``meta[key]`` of the mqttspool spool at ``path``; None if absent, foreign or unreadable."""
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()
        if app_id is None or app_id[0] != APPLICATION_ID:
            return None
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return None if row is None else str(row[0])
