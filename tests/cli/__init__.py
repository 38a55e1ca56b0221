"""The commands as an operator meets them: enqueue, status, watch, --help, what each says."""
