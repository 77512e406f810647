"""Exit codes, the error type and the output helpers every command shares."""

from __future__ import annotations

import json
import sys
from typing import Any

EXIT_OK = 0


EXIT_ERROR = 1


EXIT_PENDING = 2


EXIT_INTERRUPTED = 130


PROG = "natsbus"


class CliError(Exception):
    """An expected failure: printed as one ``natsbus: error: ...`` line, exit 1."""


def eprint(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))
