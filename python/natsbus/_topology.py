"""Topology arguments: a path, a dict or a ``Topology``."""

from __future__ import annotations

import os
from typing import Any

from ._natsbus import Topology
from .errors import InvalidArgumentError


def as_topology(obj: Any) -> Topology:
    """Validate ``obj`` (path, dict or ``Topology``) into a ``Topology``."""
    if isinstance(obj, Topology):
        return obj
    if isinstance(obj, dict):
        return Topology.from_dict(obj)
    if isinstance(obj, (str, os.PathLike)):
        return Topology.load(os.fspath(obj))
    if (
        isinstance(obj, (list, tuple))
        and obj
        and all(isinstance(p, (str, os.PathLike)) for p in obj)
    ):
        first, *rest = (os.fspath(p) for p in obj)
        return Topology.load(first, *rest)
    raise InvalidArgumentError(
        "topology must be a path (or a list of paths), a dict or a natsbus.Topology, "
        f"not {type(obj).__name__}"
    )
