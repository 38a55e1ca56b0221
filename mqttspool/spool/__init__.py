"""The SQLite spool: every SQL statement and peewee model of mqttspool lives in this package.

Public names are re-exported here and imported on first use, so
:mod:`mqttspool.spool.readonly` (the standard-library-only reader behind
``mqttspool health``) can be imported without loading peewee.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mqttspool.spool.store import (
        AppendResult,
        DeadLetter,
        Rejection,
        SalvageReport,
        Spool,
        SpoolStats,
        classify_file,
        open_spool,
        read_stats_json,
        recover_spool,
        sqlite_error_code,
    )

_LAZY: dict[str, str] = {
    "AppendResult": "mqttspool.spool.store",
    "DeadLetter": "mqttspool.spool.store",
    "Rejection": "mqttspool.spool.store",
    "SalvageReport": "mqttspool.spool.store",
    "Spool": "mqttspool.spool.store",
    "SpoolStats": "mqttspool.spool.store",
    "classify_file": "mqttspool.spool.store",
    "open_spool": "mqttspool.spool.store",
    "read_stats_json": "mqttspool.spool.store",
    "recover_spool": "mqttspool.spool.store",
    "sqlite_error_code": "mqttspool.spool.store",
}

__all__ = [
    "AppendResult",
    "DeadLetter",
    "Rejection",
    "SalvageReport",
    "Spool",
    "SpoolStats",
    "classify_file",
    "open_spool",
    "read_stats_json",
    "recover_spool",
    "sqlite_error_code",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use and cache it in the package namespace."""
    if name not in _LAZY:
        raise AttributeError(f"module 'mqttspool.spool' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
