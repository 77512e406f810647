"""natscli contexts: the connection settings ``nats context add`` saves.

A context is a JSON file, ``$XDG_CONFIG_HOME/nats/context/NAME.json`` (else
``~/.config/nats/context/NAME.json``), with the server URLs, credentials, TLS
files, inbox prefix and JetStream domain. ``connect(context=NAME)``, the CLI's
``--context NAME`` and ``$NATS_CONTEXT`` use one; as in natscli, what is given
explicitly (arguments, flags, the ``NATS_*`` variables) wins over the context.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import errors

#: The context fields natsbus uses (natscli's names); the rest are natscli's own.
FIELDS = (
    "url",
    "user",
    "password",
    "token",
    "creds",
    "nkey",
    "cert",
    "key",
    "ca",
    "inbox_prefix",
    "jetstream_domain",
    "tls_first",
)


def context_dir() -> Path:
    """Where natscli keeps its contexts."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "nats" / "context"


@dataclass(frozen=True)
class Context:
    """One natscli context: its name, file and the settings natsbus uses."""

    name: str
    path: Path
    settings: dict[str, Any]

    def get(self, field: str) -> Any:
        value = self.settings.get(field)
        return value if value not in ("", None) else None

    def __repr__(self) -> str:  # never the password or token
        shown = sorted(k for k in self.settings if self.get(k) is not None)
        return f"Context(name={self.name!r}, path={str(self.path)!r}, fields={shown})"


def load_context(name: str) -> Context:
    """The context ``name`` (or the context file at that path).

    Raises ``InvalidArgumentError`` naming the file and the contexts there are
    when it does not exist or is not a context.
    """
    if name.endswith(".json") or os.sep in name:
        path = Path(name).expanduser()
        label = path.stem
    else:
        path = context_dir() / f"{name}.json"
        label = name
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        hint = f"the contexts there: {', '.join(known)}" if known else "there are none"
        raise errors.InvalidArgumentError(
            f"natscli context {label!r} not found: no file {path} ({hint}; "
            "create one with `nats context add`)"
        ) from None
    except OSError as e:
        raise errors.InvalidArgumentError(f"cannot read natscli context {path}: {e}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise errors.InvalidArgumentError(
            f"natscli context {path} is not valid JSON: {e.msg} (line {e.lineno})"
        ) from None
    if not isinstance(data, dict):
        raise errors.InvalidArgumentError(f"natscli context {path} must hold a JSON object")
    for field in ("nsc", "user_jwt", "socks_proxy", "windows_cert_store"):
        if data.get(field):
            raise errors.InvalidArgumentError(
                f"natscli context {path} uses {field!r}, which natsbus does not support: "
                "give the credentials as creds, nkey, user/password or token"
            )
    return Context(label, path, {k: data[k] for k in FIELDS if k in data})


def named_context(explicit: Optional[str]) -> Optional[Context]:
    """The context asked for: ``explicit``, else ``$NATS_CONTEXT``, else none."""
    name = explicit or os.environ.get("NATS_CONTEXT") or None
    return load_context(name) if name else None
