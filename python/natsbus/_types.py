"""Plain data types shared by the API: topology problems and plans."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional


class Problem(NamedTuple):
    """One problem found while validating a topology."""

    file: Optional[str]
    """The file the topology came from, if any."""
    line: Optional[int]
    """1-based line, where known."""
    field: str
    """Dotted path of the field, e.g. ``streams.ORDERS.max_age``."""
    message: str
    """What is wrong and what to do about it."""

    def __str__(self) -> str:
        where = ""
        if self.file and self.line:
            where = f"{self.file}:{self.line}: "
        elif self.file:
            where = f"{self.file}: "
        elif self.line:
            where = f"line {self.line}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class Change:
    """One stream or consumer in a plan and what applying would do to it.

    ``action`` is one of ``create``, ``update``, ``destructive``, ``blocked``,
    ``unchanged`` or ``unmanaged``; ``diff`` maps a field to ``(live, desired)``;
    ``reason`` explains a blocked or destructive change.
    """

    __slots__ = ("action", "consumer", "diff", "reason", "stream")

    def __init__(
        self,
        action: str,
        stream: str,
        consumer: Optional[str] = None,
        diff: Optional[dict[str, tuple[Any, Any]]] = None,
        reason: Optional[str] = None,
    ) -> None:
        self.action = action
        self.stream = stream
        self.consumer = consumer
        self.diff: dict[str, tuple[Any, Any]] = dict(diff or {})
        self.reason = reason

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Change:
        diff = {k: (v[0], v[1]) for k, v in (d.get("diff") or {}).items()}
        return cls(d["action"], d["stream"], d.get("consumer"), diff, d.get("reason"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "stream": self.stream,
            "consumer": self.consumer,
            "diff": {k: [a, b] for k, (a, b) in self.diff.items()},
            "reason": self.reason,
        }

    @property
    def target(self) -> str:
        """``stream STREAM`` or ``consumer STREAM/NAME``."""
        if self.consumer is None:
            return f"stream {self.stream}"
        return f"consumer {self.stream}/{self.consumer}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Change) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        extra = f", diff={self.diff!r}" if self.diff else ""
        return f"Change({self.action!r}, {self.target!r}{extra})"


_PENDING = frozenset({"create", "update", "destructive", "blocked"})


class Plan:
    """What applying a topology would do (or did).

    ``pending`` is true when anything would change; ``changes`` lists every
    stream and consumer; ``str(plan)`` is the readable plan and ``to_dict()``
    the machine form.
    """

    __slots__ = ("_text", "changes")

    def __init__(self, changes: list[Change], text: Optional[str] = None) -> None:
        self.changes = list(changes)
        self._text = text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls([Change.from_dict(c) for c in d.get("changes", [])], d.get("text"))

    @property
    def pending(self) -> bool:
        """True when applying would create, update or refuse something."""
        return any(c.action in _PENDING for c in self.changes)

    def by_action(self, action: str) -> list[Change]:
        """The changes with the given action."""
        return [c for c in self.changes if c.action == action]

    def to_dict(self) -> dict[str, Any]:
        return {"pending": self.pending, "changes": [c.to_dict() for c in self.changes]}

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        lines = [f"{c.action:12} {c.target}" for c in self.changes]
        return "\n".join(lines) if lines else "nothing to do"

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for c in self.changes:
            counts[c.action] = counts.get(c.action, 0) + 1
        inner = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        return f"Plan(pending={self.pending}, {inner})" if inner else "Plan(pending=False)"

    def __bool__(self) -> bool:
        return self.pending
