"""Child process of the kill -9 test: append rounds of 8 readings, report each commit.

Usage: ``python tests/support/crash_writer.py SPOOL_PATH FIRST_VALUE``. After every
:meth:`Spool.append` returns, one line ``{"seqs": [...], "values": [...]}`` is
written to stdout and flushed, so every line the parent reads names readings
that were durable before the line was printed. Runs until killed.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading
from mqttspool.spool import open_spool

ROUND = 8


def main() -> None:
    """Append forever; the parent SIGKILLs us at a random moment."""
    path, first = sys.argv[1], int(sys.argv[2])
    spool = open_spool(SpoolConfig(path=path, min_free_bytes=0, synchronous="full"))
    print(json.dumps({"ready": True}), flush=True)
    value = first
    ts = datetime(2026, 11, 26, tzinfo=UTC)
    while True:
        values = [float(value + i) for i in range(ROUND)]
        batch = [
            Reading(device="edge-01", sensor="crash", metric="n", value=v, ts=ts) for v in values
        ]
        seqs = spool.append(batch).seqs
        sys.stdout.write(json.dumps({"seqs": seqs, "values": values}) + "\n")
        sys.stdout.flush()
        value += ROUND


if __name__ == "__main__":
    main()
