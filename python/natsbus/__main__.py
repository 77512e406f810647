"""``python -m natsbus``: the natsbus command line."""

from .cli import main

raise SystemExit(main())
