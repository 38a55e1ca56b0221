"""The SQLite spool: every SQL statement and peewee model of mqttspool lives in this package.

Modules, in the order a reading meets them:

- :mod:`~mqttspool.spool.schema`: the file format (models, pragmas, schema
  version and migration), creating and attaching, :func:`classify_file`.
- :mod:`~mqttspool.spool.store`: :class:`Spool`, the queue (append with
  bounds and overflow policy, settle, dead letters, stats, meta).
- :mod:`~mqttspool.spool.drops`: drop counters (pending until a commit).
- :mod:`~mqttspool.spool.headroom`: the reserve file that lets a full disk drain.
- :mod:`~mqttspool.spool.dberrors`: the one mapping of database errors to
  :class:`~mqttspool.errors.SpoolError` and its subclasses.
- :mod:`~mqttspool.spool.salvage`: quarantine and salvage of a corrupt file.
- :mod:`~mqttspool.spool.opening`: :func:`open_spool` / :func:`recover_spool`.
- :mod:`~mqttspool.spool.readonly`: the standard-library-only reader behind
  ``mqttspool health``.

Public names are re-exported here and imported on first use, so
:mod:`mqttspool.spool.readonly` can be imported without loading peewee.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mqttspool.spool.dberrors import map_errors, sqlite_error_code
    from mqttspool.spool.opening import open_spool, recover_spool
    from mqttspool.spool.salvage import SalvageReport, count_lost_to_corruption
    from mqttspool.spool.schema import SCHEMA_VERSION, classify_file
    from mqttspool.spool.store import (
        AppendResult,
        DeadLetter,
        Eviction,
        Rejection,
        Spool,
        SpoolStats,
        read_stats_json,
    )

_LAZY: dict[str, str] = {
    "AppendResult": "mqttspool.spool.store",
    "DeadLetter": "mqttspool.spool.store",
    "Eviction": "mqttspool.spool.store",
    "Rejection": "mqttspool.spool.store",
    "SCHEMA_VERSION": "mqttspool.spool.schema",
    "SalvageReport": "mqttspool.spool.salvage",
    "Spool": "mqttspool.spool.store",
    "SpoolStats": "mqttspool.spool.store",
    "classify_file": "mqttspool.spool.schema",
    "count_lost_to_corruption": "mqttspool.spool.salvage",
    "map_errors": "mqttspool.spool.dberrors",
    "open_spool": "mqttspool.spool.opening",
    "read_stats_json": "mqttspool.spool.store",
    "recover_spool": "mqttspool.spool.opening",
    "sqlite_error_code": "mqttspool.spool.dberrors",
}

__all__ = [
    "SCHEMA_VERSION",
    "AppendResult",
    "DeadLetter",
    "Eviction",
    "Rejection",
    "SalvageReport",
    "Spool",
    "SpoolStats",
    "classify_file",
    "count_lost_to_corruption",
    "map_errors",
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
