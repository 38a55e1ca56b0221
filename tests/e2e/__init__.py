"""Whole flows: the README quick start, device -> broker -> drain -> ingest -> database."""
