"""Configuration: loading, ranges, secrets files, sensor options, the shipped example."""
