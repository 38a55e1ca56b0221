"""Benchmarks, each run as a script (``python3 bench/NAME.py``); see README "Benchmarks"."""
