"""The wire format: readings, payload bytes, batch codec, the one consumer decoder."""
