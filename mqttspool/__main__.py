"""``python -m mqttspool`` is the same program as ``mqttspool``."""

from mqttspool.cli import main

raise SystemExit(main())
