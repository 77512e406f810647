"""Human output: sizes, aligned tables, the status view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import natsbus

from ._common import PROG


def human_bytes(n: Optional[int]) -> str:
    """``1536`` -> ``1.5 KiB``; ``None`` -> ``-``."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int]) -> str:
    """Left-aligned text columns, right-aligned numeric columns, two spaces apart."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def fmt(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(headers), *(fmt(r) for r in rows)])


def subjects_cell(subjects: Sequence[str], limit: int = 48) -> str:
    text = ", ".join(subjects)
    if len(text) <= limit:
        return text
    shown: list[str] = []
    for subject in subjects:
        if len(", ".join([*shown, subject])) > limit - 8:
            break
        shown.append(subject)
    return f"{', '.join(shown)} (+{len(subjects) - len(shown)} more)"


def problem_dict(problem: natsbus.Problem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": problem.line,
        "field": problem.field,
        "message": problem.message,
    }


def topology_summary(topo: natsbus.Topology) -> str:
    n_streams, n_consumers = len(topo.streams), len(topo.consumers)
    return (
        f"{n_streams} stream{'s' if n_streams != 1 else ''}, "
        f"{n_consumers} consumer{'s' if n_consumers != 1 else ''}"
    )


def render_status(status: dict[str, Any], missing: Sequence[str], missing_consumers: Any) -> str:
    streams = status.get("streams") or []
    stream_rows = [
        [
            s["name"],
            subjects_cell(s.get("subjects") or []),
            str(s.get("messages", 0)),
            human_bytes(s.get("bytes")),
            str(s.get("storage", "")),
            str(s.get("retention", "")),
            "",
        ]
        for s in streams
    ]
    stream_rows += [[name, "-", "-", "-", "-", "-", "MISSING"] for name in missing]
    out = [f"nats-server {status.get('server_version', '?')}", ""]
    if stream_rows:
        out.append(
            table(
                ["STREAM", "SUBJECTS", "MESSAGES", "BYTES", "STORAGE", "RETENTION", ""],
                stream_rows,
                numeric=(2, 3),
            )
        )
    else:
        out.append("no streams")
    consumer_rows = [
        [
            f"{s['name']}/{c['name']}",
            "pull" if c.get("pull") else "push",
            str(c.get("num_pending", 0)),
            str(c.get("num_ack_pending", 0)),
            str(c.get("num_redelivered", 0)),
            str(c.get("num_waiting", 0)),
            "",
        ]
        for s in streams
        for c in s.get("consumers") or []
    ]
    consumer_rows += [
        [f"{s}/{c}", "-", "-", "-", "-", "-", "MISSING"] for s, c in missing_consumers
    ]
    if consumer_rows:
        out.append("")
        out.append(
            table(
                ["CONSUMER", "TYPE", "PENDING", "ACK PENDING", "REDELIVERED", "WAITING", ""],
                consumer_rows,
                numeric=(2, 3, 4, 5),
            )
        )
    if missing or missing_consumers:
        out.append("")
        out.append(
            "MISSING: declared in the topology but not on the server "
            f"(run `{PROG} apply` to create)"
        )
    return "\n".join(out)


def render_dead_letters(stream: str, letters: Sequence[Any]) -> str:
    """The dead letters of ``stream``, one row each, and a count."""
    if not letters:
        return f"{stream}: no dead letters"
    rows = []
    for d in letters:
        origin = f"{d.stream}/{d.consumer}" if d.stream else "-"
        rows.append(
            [
                str(d.seq),
                origin,
                d.subject or "-",
                "-" if d.sequence is None else str(d.sequence),
                "-" if d.delivered is None else str(d.delivered),
                (d.reason or "-")[:80],
            ]
        )
    n = len(letters)
    head = table(["SEQ", "FROM", "SUBJECT", "ORIG SEQ", "DELIVERED", "REASON"], rows, [0, 3, 4])
    return f"{head}\n{n} dead letter{'s' if n != 1 else ''} in {stream}"
