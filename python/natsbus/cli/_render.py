"""Human output: sizes, aligned tables, the status view."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import natsbus

from .._check import human_seconds, parse_time
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


def ago(when: Optional[str], now: Optional[datetime.datetime] = None) -> str:
    """``2026-...Z`` -> ``12s ago``; ``None`` -> ``never``."""
    moment = parse_time(when)
    if moment is None:
        return "never"
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{human_seconds(max(0.0, (now - moment).total_seconds()))} ago"


def replica_notes(stream: Mapping[str, Any]) -> str:
    """``NO LEADER`` / ``n3 OFFLINE`` / ``n2 BEHIND`` for a replicated stream, else ``""``."""
    if int(stream.get("num_replicas") or 1) <= 1:
        return ""
    notes = [] if stream.get("leader") else ["NO LEADER"]
    for replica in stream.get("replicas") or []:
        if replica.get("offline"):
            notes.append(f"{replica.get('name')} OFFLINE")
        elif not replica.get("current"):
            notes.append(f"{replica.get('name')} BEHIND")
    return ", ".join(notes)


def stalled(consumer: Mapping[str, Any]) -> bool:
    """Ack pending at max_ack_pending: the server delivers nothing more."""
    limit = int(consumer.get("max_ack_pending") or -1)
    return limit > 0 and int(consumer.get("num_ack_pending") or 0) >= limit


def consumer_row(stream: str, c: Mapping[str, Any], *, with_leader: bool = False) -> list[str]:
    limit = c.get("max_ack_pending")
    row = [
        f"{stream}/{c['name']}",
        "pull" if c.get("pull") else "push",
        str(c.get("num_pending", 0)),
        str(c.get("num_ack_pending", 0)),
        "-" if limit is None or limit < 0 else str(limit),
        str(c.get("ack_floor", 0)),
        str(c.get("num_redelivered", 0)),
        str(c.get("num_waiting", 0)),
        ago(c.get("last_active")),
    ]
    if with_leader:
        row.append(c.get("leader") or "-")
    row.append("STALLED" if stalled(c) else "")
    return row


CONSUMER_HEADERS = [
    "CONSUMER",
    "TYPE",
    "PENDING",
    "ACK PENDING",
    "MAX ACK PENDING",
    "ACK FLOOR",
    "REDELIVERED",
    "WAITING",
    "LAST ACTIVE",
]
CONSUMER_NUMERIC = (2, 3, 4, 5, 6, 7)


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
            str(s.get("num_replicas") or 1),
            s.get("leader") or "-",
            replica_notes(s),
        ]
        for s in streams
    ]
    stream_rows += [[name, "-", "-", "-", "-", "-", "-", "-", "MISSING"] for name in missing]
    out = [f"nats-server {status.get('server_version', '?')}", ""]
    if stream_rows:
        out.append(
            table(
                [
                    "STREAM",
                    "SUBJECTS",
                    "MESSAGES",
                    "BYTES",
                    "STORAGE",
                    "RETENTION",
                    "REPLICAS",
                    "LEADER",
                    "",
                ],
                stream_rows,
                numeric=(2, 3, 6),
            )
        )
    else:
        out.append("no streams")
    consumer_rows = [consumer_row(s["name"], c) for s in streams for c in s.get("consumers") or []]
    blank = ["-"] * (len(CONSUMER_HEADERS) - 1)
    consumer_rows += [[f"{s}/{c}", *blank, "MISSING"] for s, c in missing_consumers]
    if consumer_rows:
        out.append("")
        out.append(table([*CONSUMER_HEADERS, ""], consumer_rows, numeric=CONSUMER_NUMERIC))
    if missing or missing_consumers:
        out.append("")
        out.append(
            "MISSING: declared in the topology but not on the server "
            f"(run `{PROG} apply` to create)"
        )
    return "\n".join(out)


def render_stream_status(stream: Mapping[str, Any], server_version: Optional[str]) -> str:
    """``natsbus status STREAM``: the stream, its replicas, its consumers."""
    replicas = int(stream.get("num_replicas") or 1)
    first, last = stream.get("first_seq", 0), stream.get("last_seq", 0)
    fields = [
        ("subjects", ", ".join(stream.get("subjects") or []) or "-"),
        ("storage", f"{stream.get('storage', '?')}, retention {stream.get('retention', '?')}"),
        (
            "messages",
            f"{stream.get('messages', 0)} ({human_bytes(stream.get('bytes'))}), "
            f"seq {first}..{last}",
        ),
        ("replicas", str(replicas)),
    ]
    if replicas > 1:
        notes = replica_notes(stream)
        fields.append(("leader", (stream.get("leader") or "-") + (f"  {notes}" if notes else "")))
    width = max(len(k) for k, _ in fields)
    out = [f"stream {stream['name']} (nats-server {server_version or '?'})"]
    out += [f"  {k.ljust(width)}  {v}" for k, v in fields]
    peers = stream.get("replicas") or []
    if peers:
        rows = [
            [
                str(r.get("name", "?")),
                "yes" if r.get("current") else "no",
                "yes" if r.get("offline") else "no",
                str(r.get("lag") or 0),
                "-" if r.get("active") is None else f"{human_seconds(r['active'])} ago",
            ]
            for r in peers
        ]
        out += ["", table(["REPLICA", "CURRENT", "OFFLINE", "LAG", "SEEN"], rows, numeric=(3,))]
    consumers = stream.get("consumers") or []
    out.append("")
    if consumers:
        rows = [consumer_row(stream["name"], c, with_leader=replicas > 1) for c in consumers]
        headers = [*CONSUMER_HEADERS, *(["LEADER"] if replicas > 1 else []), ""]
        out.append(table(headers, rows, numeric=CONSUMER_NUMERIC))
    else:
        out.append("no consumers")
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
