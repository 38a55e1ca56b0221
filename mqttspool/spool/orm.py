"""peewee, imported without probing for database-server drivers.

When imported, peewee tries ``psycopg2``, ``psycopg``, ``pymysql`` and
``MySQLdb``. The spool is SQLite only, yet with the ``postgres`` extra
installed (for ``ingest``, which uses psycopg directly) that probe imported
psycopg: ~55 ms of every ``run``/``drain``/``enqueue`` start on the VM, a
tenth of an empty drain, more on a Pi. While peewee loads, those modules are
answered "not installed"; afterwards ``import psycopg`` works as before (an
already imported driver is left alone).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

SERVER_DRIVERS = ("psycopg2", "psycopg2cffi", "psycopg", "pymysql", "MySQLdb")


@contextmanager
def _server_drivers_hidden() -> Iterator[None]:
    hidden = [name for name in SERVER_DRIVERS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


with _server_drivers_hidden():
    import peewee as pw
    from playhouse.sqlite_ext import AutoIncrementField

__all__ = ["SERVER_DRIVERS", "AutoIncrementField", "pw"]
