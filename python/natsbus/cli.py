"""The ``natsbus`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="natsbus",
        description="Declarative NATS JetStream setup and tooling.",
    )
    parser.add_argument("--version", action="version", version=f"natsbus {__version__}")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help(sys.stderr)
    return 0
