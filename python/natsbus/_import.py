"""``natsbus import``: init scripts and natscli JSON into one topology file.

Reads ``nats stream add`` / ``nats stream update`` / ``nats consumer add`` command lines in shell
scripts (line continuations, quotes, ``${VAR:-default}`` kept for the topology to substitute,
``2>/dev/null || true`` and other trailing shell dropped, ``--defaults`` and connection flags
ignored) and natscli JSON (a stream config, ``nats stream info --json``, a consumer config or
``nats consumer info --json`` with its ``stream_name``, a list of stream configs,
``{"streams": [...]}``). Every flag or field it cannot map is reported with its file and line.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# nats stream add FLAG -> (topology field, kind)
STREAM_FLAGS: dict[str, tuple[str, str]] = {
    "--subjects": ("subjects", "list"),
    "--storage": ("storage", "text"),
    "--retention": ("retention", "retention"),
    "--discard": ("discard", "text"),
    "--max-msgs": ("max_msgs", "int"),
    "--max-msgs-per-subject": ("max_msgs_per_subject", "int"),
    "--max-bytes": ("max_bytes", "size"),
    "--max-age": ("max_age", "duration"),
    "--max-msg-size": ("max_msg_size", "size"),
    "--max-consumers": ("max_consumers", "int"),
    "--dupe-window": ("duplicate_window", "duration"),
    "--replicas": ("replicas", "int"),
    "--description": ("description", "text"),
    "--compression": ("compression", "text"),
    "--first-sequence": ("first_seq", "int"),
    "--allow-rollup": ("allow_rollup_hdrs", "true"),
    "--deny-delete": ("deny_delete", "true"),
    "--deny-purge": ("deny_purge", "true"),
    "--allow-direct": ("allow_direct", "true"),
    "--no-allow-direct": ("allow_direct", "false"),
    "--allow-mirror-direct": ("mirror_direct", "true"),
    "--no-ack": ("no_ack", "true"),
    "--discard-per-subject": ("discard_new_per_subject", "true"),
}

# nats consumer add FLAG -> (topology field, kind)
CONSUMER_FLAGS: dict[str, tuple[str, str]] = {
    "--filter": ("filter_subjects", "filter"),
    "--ack": ("ack_policy", "text"),
    "--deliver": ("deliver_policy", "deliver"),
    "--max-deliver": ("max_deliver", "int"),
    "--max-pending": ("max_ack_pending", "int"),
    "--ack-wait": ("ack_wait", "duration"),
    "--target": ("deliver_subject", "text"),
    "--deliver-group": ("deliver_group", "text"),
    "--replay": ("replay_policy", "text"),
    "--sample": ("sample_freq", "text"),
    "--heartbeat": ("idle_heartbeat", "duration"),
    "--flow-control": ("flow_control", "true"),
    "--max-waiting": ("max_waiting", "int"),
    "--max-pull-batch": ("max_batch", "int"),
    "--max-pull-expire": ("max_expires", "duration"),
    "--max-pull-bytes": ("max_bytes", "size"),
    "--inactive-threshold": ("inactive_threshold", "duration"),
    "--description": ("description", "text"),
    "--replicas": ("num_replicas", "int"),
    "--memory": ("mem_storage", "true"),
    "--headers-only": ("headers_only", "true"),
    "--pull": ("", "pull"),
}

# Connection and interaction flags: about how natscli runs, not what it creates.
IGNORED = {
    "--server", "-s", "--user", "--password", "--creds", "--nkey", "--context", "--tlscert",
    "--tlskey", "--tlsca", "--tlsfirst", "--timeout", "--js-domain", "--js-api-prefix",
    "--inbox-prefix", "--connection-name", "--defaults", "--force", "-f", "--json", "--trace",
    "--no-context",
}  # fmt: skip
# Flags of the ignored set that take no value.
IGNORED_BOOL = {"--defaults", "--force", "-f", "--json", "--trace", "--tlsfirst", "--no-context"}

RETENTION = {"limits": "limits", "interest": "interest", "work": "workqueue",
             "workq": "workqueue", "workqueue": "workqueue"}  # fmt: skip
DELIVER = {"all": "all", "last": "last", "new": "new", "last_per_subject": "last_per_subject",
           "last-per-subject": "last_per_subject"}  # fmt: skip


@dataclass
class Imported:
    """The topology built so far, and what could not be mapped (``file:line: message``)."""

    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # where each stream was first declared, for problems about it
    origin: dict[str, str] = field(default_factory=dict)

    def topology(self) -> dict[str, Any]:
        return {"streams": self.streams}


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Shell lines with their continuations joined, each with the line it starts on."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = n
        if raw.rstrip().endswith("\\"):
            buf.append(raw.rstrip()[:-1])
            continue
        buf.append(raw)
        out.append((start, " ".join(buf)))
        buf = []
    if buf:
        out.append((start, " ".join(buf)))
    return out


def command_tokens(line: str) -> Optional[list[str]]:
    """The tokens of the first command on ``line``, without redirections and what follows
    ``||``, ``&&``, ``;`` or ``|``; ``None`` for a line that is no command (or not shell)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:
        return None
    out: list[str] = []
    for tok in tokens:
        if tok and set(tok) <= set(";&|<>"):
            if out and out[-1].isdigit() and tok.startswith(">"):
                out.pop()  # the 2 of 2>/dev/null
            break
        out.append(tok)
    return out


def nats_command(tokens: list[str]) -> Optional[tuple[str, str, list[str]]]:
    """``(noun, verb, rest)`` of a natscli call (after ``docker exec box`` and global flags)."""
    if "nats" not in tokens:
        return None
    rest = tokens[tokens.index("nats") + 1 :]
    while rest and rest[0].startswith("-"):  # global flags before the command
        flag = rest.pop(0)
        if "=" not in flag and flag not in IGNORED_BOOL and rest:
            rest.pop(0)
    if len(rest) < 2:
        return None
    noun = {"stream": "stream", "str": "stream", "consumer": "consumer", "con": "consumer",
            "obs": "consumer"}.get(rest[0])  # fmt: skip
    verb = {"add": "add", "create": "add", "new": "add", "update": "update", "edit": "update"}.get(
        rest[1]
    )
    if noun is None or verb is None:
        return None
    return noun, verb, rest[2:]


def _value(kind: str, raw: str, where: str, flag: str, problems: list[str]) -> Any:
    if kind == "int":
        if re.fullmatch(r"-?\d+", raw):
            return int(raw)
        if raw.startswith("${"):
            return raw  # ${VAR:-1}: the topology substitutes it
        problems.append(f"{where}: {flag} {raw!r} is not a whole number")
        return None
    if kind == "list":
        return [s.strip() for s in raw.split(",") if s.strip()]
    if kind == "retention":
        if raw.lower() in RETENTION:
            return RETENTION[raw.lower()]
        problems.append(f"{where}: {flag} {raw!r}: use limits, interest or work")
        return None
    if kind == "deliver":
        if raw.lower() in DELIVER:
            return DELIVER[raw.lower()]
        if raw.isdigit():
            return ("by_start_sequence", int(raw))
        problems.append(f"{where}: {flag} {raw!r}: not mapped (use all, last, new or a sequence)")
        return None
    return raw  # text, size and duration keep the topology file's own forms


def _flags(
    args: list[str], where: str, table: dict[str, tuple[str, str]], what: str, imported: Imported
) -> tuple[list[str], dict[str, Any], list[str]]:
    """Positional arguments, mapped fields, and flags of the other table (for a hint)."""
    positional: list[str] = []
    fields: dict[str, Any] = {}
    other = CONSUMER_FLAGS if table is STREAM_FLAGS else STREAM_FLAGS
    misplaced: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if not tok.startswith("-"):
            positional.append(tok)
            continue
        flag, eq, inline = tok.partition("=")
        spec = table.get(flag)
        if spec is None and flag.startswith("--no-"):
            positive = table.get("--" + flag[len("--no-") :])
            if positive is not None and positive[1] == "true":
                spec = (positive[0], "false")
        needs_value = spec is not None and spec[1] not in ("true", "false", "pull")
        if flag in IGNORED:
            if flag not in IGNORED_BOOL and not eq and i < len(args):
                i += 1
            continue
        if spec is None:
            takes = i < len(args) and not args[i].startswith("-") and not eq
            value = inline if eq else (args[i] if takes else "")
            if takes:
                i += 1
            if flag in other:
                misplaced.append(f"{flag} {value}".strip())
            else:
                imported.problems.append(
                    f"{where}: {flag} of `{what}` is not mapped: set it in the topology by hand"
                )
            continue
        name, kind = spec
        if needs_value:
            if eq:
                raw = inline
            elif i < len(args):
                raw = args[i]
                i += 1
            else:
                imported.problems.append(f"{where}: {flag} needs a value")
                continue
        else:
            raw = ""
        if kind == "true":
            fields[name] = True
        elif kind == "false":
            fields[name] = False
        elif kind == "pull":
            continue
        elif kind == "filter":
            if raw:
                fields.setdefault(name, []).append(raw)
        else:
            value = _value(kind, raw, where, flag, imported.problems)
            if value is None:
                continue
            if isinstance(value, tuple):
                fields["deliver_policy"], fields["opt_start_seq"] = value
            elif kind == "list" and name in fields:
                fields[name] += value
            else:
                fields[name] = value
    return positional, fields, misplaced


def import_script(text: str, source: str, imported: Imported) -> None:
    """The natscli commands of a shell script, into ``imported``."""
    for line, logical in logical_lines(text):
        tokens = command_tokens(logical)
        if not tokens:
            continue
        found = nats_command(tokens)
        if found is None:
            continue
        noun, verb, args = found
        where = f"{source}:{line}"
        if noun == "stream":
            positional, fields, misplaced = _flags(
                args, where, STREAM_FLAGS, f"nats stream {verb}", imported
            )
            if not positional:
                imported.problems.append(f"{where}: `nats stream {verb}` without a stream name")
                continue
            name = positional[0]
            for flag in misplaced:
                imported.problems.append(
                    f"{where}: {flag} given to `nats stream {verb} {name}` is a consumer setting, "
                    f"not a stream one: give it on a consumer of {name} "
                    f"(nats consumer add {name} NAME {flag}); it was left out"
                )
            stream = imported.streams.setdefault(name, {})
            imported.origin.setdefault(name, where)
            stream.update(fields)
        else:
            positional, fields, misplaced = _flags(
                args, where, CONSUMER_FLAGS, f"nats consumer {verb}", imported
            )
            if len(positional) < 2:
                imported.problems.append(
                    f"{where}: `nats consumer {verb}` needs a stream and a consumer name"
                )
                continue
            stream_name, durable = positional[0], positional[1]
            for flag in misplaced:
                imported.problems.append(
                    f"{where}: {flag} given to `nats consumer {verb}` is a stream setting: "
                    f"set it on stream {stream_name}; it was left out"
                )
            filters = fields.pop("filter_subjects", None)
            if filters:
                fields["filter_subject" if len(filters) == 1 else "filter_subjects"] = (
                    filters[0] if len(filters) == 1 else filters
                )
            stream = imported.streams.setdefault(stream_name, {})
            stream.setdefault("consumers", {}).setdefault(durable, {}).update(fields)


def _stream_entry(config: dict[str, Any], where: str, imported: Imported) -> None:
    config = dict(config)
    name = config.pop("name", None)
    if not isinstance(name, str) or not name:
        imported.problems.append(f"{where}: a stream config without a name")
        return
    if imported.streams.get(name):
        imported.problems.append(
            f"{where}: stream {name} is also given in {imported.origin.get(name, 'another file')}"
        )
        return
    imported.origin.setdefault(name, where)
    imported.streams.setdefault(name, {}).update(config)


def _consumer_entry(data: dict[str, Any], where: str, imported: Imported) -> None:
    config = dict(data.get("config", data))
    stream = data.get("stream_name") or config.pop("stream_name", None)
    durable = config.pop("durable_name", None) or config.pop("name", None) or data.get("name")
    if not stream or not durable:
        imported.problems.append(f"{where}: a consumer needs its stream_name and a durable name")
        return
    for key in ("created", "ts"):
        config.pop(key, None)
    imported.streams.setdefault(stream, {}).setdefault("consumers", {})[durable] = config


def import_json(text: str, source: str, imported: Imported) -> None:
    """natscli JSON (see the module docs), into ``imported``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        imported.problems.append(f"{source}:{e.lineno}: not valid JSON: {e.msg}")
        return
    items: list[Any]
    if isinstance(data, dict) and isinstance(data.get("streams"), list):
        items = data["streams"]
    elif isinstance(data, list):
        items = data
    else:
        items = [data]
    for n, item in enumerate(items):
        where = source if len(items) == 1 else f"{source}: item {n}"
        if not isinstance(item, dict):
            imported.problems.append(f"{where}: expected a stream or consumer config")
            continue
        config = item.get("config")
        inner: dict[str, Any] = config if isinstance(config, dict) else item
        is_consumer = "stream_name" in item or "durable_name" in inner or "ack_policy" in inner
        if is_consumer:
            _consumer_entry(item, where, imported)
        else:
            _stream_entry(inner, where, imported)


def import_files(paths: list[Path]) -> Imported:
    """Read every file (shell script or JSON, told apart by content) into one topology."""
    imported = Imported()
    for path in paths:
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith(("{", "[")):
            import_json(text, str(path), imported)
        else:
            import_script(text, str(path), imported)
    return imported


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML writer for topology dicts (mappings, lists, text, numbers, booleans)."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = []
        for k, v in value.items():
            if isinstance(v, dict) and v:
                lines.append(f"{pad}{_scalar(k)}:\n{to_yaml(v, indent + 1)}")
            else:
                lines.append(f"{pad}{_scalar(k)}: {to_yaml(v, indent + 1)}")
        return "\n".join(lines)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return _scalar(value)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    text = str(v)
    # ${VAR:-default} stays plain, so that after substitution a number reads as one.
    if re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[A-Za-z0-9_.>*-]*)?\}", text):
        return text
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", text) and text.lower() not in (
        "true", "false", "yes", "no", "on", "off", "null",
    ):  # fmt: skip
        return text
    return json.dumps(text)
