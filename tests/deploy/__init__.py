"""The container files and the compose service, run without Docker."""
