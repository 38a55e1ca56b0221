"""The spool's standard-library-only reader: one meta value of a file that may be damaged.

Opening uses it to read ``meta.salvaged_from`` of a file before deciding
whether a salvage already landed (:mod:`~mqttspool.spool.opening`), and
:mod:`~mqttspool.spool.schema` takes :data:`APPLICATION_ID` from here. It
opens the file read-only (``mode=ro``): nothing is created, migrated or
locked for writing, and a file that is not an mqttspool spool is never read
past its header. (``mqttspool health`` reads its own heartbeat file, not the
spool.)
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
