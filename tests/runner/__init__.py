"""The loop runner: step, one wake-up, error policy."""
