"""``mqttspool ingest``: the reference consumer (see DESIGN.md, Scale beyond one node).

Modules: :mod:`~mqttspool.ingest.store` (the storage interface, SQLite and
PostgreSQL), :mod:`~mqttspool.ingest.decode` (messages to rows),
:mod:`~mqttspool.ingest.consumer` (gather, commit, then acknowledge),
:mod:`~mqttspool.ingest.completeness` (gaps and what explains them),
:mod:`~mqttspool.ingest.metrics` (Prometheus), :mod:`~mqttspool.ingest.cli`.
"""
