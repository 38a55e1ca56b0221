"""Running the daemon: health, heartbeat, lock, metrics, supervision, failure ownership."""
