"""``python -m natsbus.cli``: the natsbus command line."""

from . import main

raise SystemExit(main())
