"""The SQLite spool: every SQL statement and peewee model of mqttspool lives in this package.

Modules, in the order a reading meets them:

- :mod:`~mqttspool.spool.schema`: the file format (models, pragmas, schema
  version and migration), creating and attaching, :func:`classify_file`.
- :mod:`~mqttspool.spool.opening`: :func:`open_spool` / :func:`recover_spool`.
- :mod:`~mqttspool.spool.store`: :class:`Spool`, the facade over its parts:
- :mod:`~mqttspool.spool.queue`: the queue (append with bounds and overflow
  policy, read in order, settle, expire).
- :mod:`~mqttspool.spool.deadletters`: dead letters (list, requeue, purge).
- :mod:`~mqttspool.spool.diskfull`: disk-full handling (the full state,
  free space, retry with headroom); :mod:`~mqttspool.spool.headroom`: the
  reserve file that lets a full disk drain.
- :mod:`~mqttspool.spool.identity`: file identity (deleted or replaced while open).
- :mod:`~mqttspool.spool.durability`: write transactions, fsync policy
  (unsynced deletes), epochs at a writer's first write;
  :mod:`~mqttspool.spool.epochs`: the epoch decision and seq -> epoch map;
  :mod:`~mqttspool.spool.ownership`: the ``run``/``drain`` lock.
- :mod:`~mqttspool.spool.rows`: the records the spool returns, shared row
  SQL and the row counters; :mod:`~mqttspool.spool.stats`: the statistics
  snapshot; :mod:`~mqttspool.spool.drops`: drop counters (pending until a commit).
- :mod:`~mqttspool.spool.dberrors`: the one mapping of database errors to
  :class:`~mqttspool.errors.SpoolError` and its subclasses.
- :mod:`~mqttspool.spool.salvage`: quarantine and salvage of a corrupt file.
- :mod:`~mqttspool.spool.readonly`: a standard-library-only read of one meta
  value (used while opening a possibly damaged file).

Public names are re-exported here and imported on first use, so
:mod:`mqttspool.spool.readonly` can be imported without loading peewee.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mqttspool.spool.dberrors import map_errors, sqlite_error_code
    from mqttspool.spool.opening import open_spool, recover_spool
    from mqttspool.spool.rows import AppendResult, DeadLetter, Eviction, Rejection
    from mqttspool.spool.salvage import SalvageReport, count_lost_to_corruption
    from mqttspool.spool.schema import SCHEMA_VERSION, classify_file
    from mqttspool.spool.stats import SpoolStats, read_stats_json
    from mqttspool.spool.store import Spool

_LAZY: dict[str, str] = {
    "AppendResult": "mqttspool.spool.rows",
    "DeadLetter": "mqttspool.spool.rows",
    "Eviction": "mqttspool.spool.rows",
    "Rejection": "mqttspool.spool.rows",
    "SCHEMA_VERSION": "mqttspool.spool.schema",
    "SalvageReport": "mqttspool.spool.salvage",
    "Spool": "mqttspool.spool.store",
    "SpoolStats": "mqttspool.spool.stats",
    "classify_file": "mqttspool.spool.schema",
    "count_lost_to_corruption": "mqttspool.spool.salvage",
    "map_errors": "mqttspool.spool.dberrors",
    "open_spool": "mqttspool.spool.opening",
    "read_stats_json": "mqttspool.spool.stats",
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
