"""The SQLite spool: queue, counters, error mapping, disk full, file identity, salvage, epochs."""
