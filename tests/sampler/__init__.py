"""The sampler: sampling rounds, clock-sync detection, what a spool failure does to sampling."""
