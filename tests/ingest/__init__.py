"""The reference consumer: storage contract, quarantine, STATE, preflight."""
