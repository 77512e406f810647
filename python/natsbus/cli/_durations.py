"""Durations on the command line: seconds, or a topology file's units (parsed in the core)."""

from __future__ import annotations

import argparse
import math

import natsbus

from .. import _natsbus


def parse_duration(text: str) -> float:
    """Parse a plain number of seconds, or a duration with units as a topology
    file writes them (``500ms``, ``30s``, ``2m``, ``1h``, ``7d``, ``1w``, ``1m30s``).

    Returns seconds. Raises ``ValueError`` for anything else.
    """
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = _natsbus.parse_duration(value)
        except natsbus.InvalidArgumentError:
            raise ValueError(
                f"{text!r} is not a duration: use seconds or a number with a unit "
                "(500ms, 30s, 2m, 1h, 7d, 1w; combinations like 1m30s work)"
            ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r}: a duration must be a finite number of seconds, not negative")
    return seconds


def duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
