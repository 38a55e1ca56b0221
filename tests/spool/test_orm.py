"""peewee loads without its server-driver probe; the drivers stay importable."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import mqttspool.spool.schema
loaded = sorted(n for n in ("psycopg", "psycopg2", "pymysql", "MySQLdb") if n in sys.modules)
print("loaded:", loaded)
import psycopg  # the postgres extra (installed with dev): still importable afterwards
print("psycopg", psycopg.__version__)
"""


def test_opening_the_spool_module_does_not_import_psycopg_which_stays_importable() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[0] == "loaded: []"
    assert out[1].startswith("psycopg 3.")


def test_a_driver_imported_before_peewee_is_left_alone() -> None:
    code = "import psycopg, mqttspool.spool.schema, sys; print(sys.modules['psycopg'] is psycopg)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "True"
