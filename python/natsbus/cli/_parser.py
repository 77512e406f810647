"""The argument parser and the entry point."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, Optional

import natsbus

from .. import __version__
from ._commands import (
    EXIT_UNKNOWN,
    cmd_apply,
    cmd_check,
    cmd_dead_letters,
    cmd_export,
    cmd_import,
    cmd_plan,
    cmd_status,
    cmd_validate,
    cmd_verify,
)
from ._common import EXIT_ERROR, EXIT_INTERRUPTED, PROG, CliError, eprint
from ._durations import duration_arg
from ._server import cmd_server


class Parser(argparse.ArgumentParser):
    """argparse with usage errors exiting 1 (exit code 2 means "changes pending").

    ``check`` sets ``usage_exit`` to 3: for a monitoring system a bad command line is
    UNKNOWN, not a WARNING.
    """

    usage_exit = EXIT_ERROR

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_exit, f"{self.prog}: error: {message}\n")


def count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (an integer >= 0)")
    return value


CONNECTION_FLAGS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("-s", "--server"),
        {
            "metavar": "URL",
            "help": "server URL(s), comma-separated (default: $NATS_URL, "
            "else nats://127.0.0.1:4222)",
        },
    ),
    (
        ("--context",),
        {
            "metavar": "NAME",
            "help": "natscli context (name or file) to take servers, credentials, TLS, inbox "
            "prefix and domain from (default: $NATS_CONTEXT); flags and NATS_* variables win",
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
        {
            "metavar": "FILE",
            "help": "file holding an nkey seed (default: $NATS_NKEY, $NATS_NKEY_SEED)",
        },
    ),
    (("--tls-ca",), {"metavar": "FILE", "help": "CA bundle (PEM) to trust (default: $NATS_CA)"}),
    (
        ("--tls-cert",),
        {"metavar": "FILE", "help": "client certificate, mutual TLS (default: $NATS_CERT)"},
    ),
    (("--tls-key",), {"metavar": "FILE", "help": "client key, mutual TLS (default: $NATS_KEY)"}),
    (
        ("--tls-first",),
        {"action": "store_true", "help": "start the TLS handshake before the server's INFO"},
    ),
    (("--name",), {"help": "connection name (default: natsbus-cli)"}),
    (
        ("--timeout",),
        {
            "type": duration_arg,
            "metavar": "DURATION",
            "help": "connect timeout (default: $NATS_TIMEOUT, else 5s)",
        },
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


CONNECTION_DEFAULTS: dict[str, Any] = {
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
    "context": None,
    "timeout": None,
    "inbox_prefix": None,
    "domain": None,
}


def connection_flags() -> Parser:
    """The connection flags of the commands that talk to a server.

    They are accepted before the command too (``natsbus -s URL plan x.yaml``): the main parser
    holds the defaults and the subcommands only override what is given after the command.
    """
    parent = Parser(add_help=False)
    group = parent.add_argument_group("connection")
    for names, options in CONNECTION_FLAGS:
        group.add_argument(*names, default=argparse.SUPPRESS, **options)
    return parent


def hidden_connection_flags(parser: argparse.ArgumentParser) -> None:
    for names, options in CONNECTION_FLAGS:
        hidden = {k: v for k, v in options.items() if k != "help"}
        parser.add_argument(*names, help=argparse.SUPPRESS, **hidden)
    parser.set_defaults(**CONNECTION_DEFAULTS)


def json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def plan_view_flags(parser: argparse.ArgumentParser) -> None:
    """How much of a plan to print: unmanaged resources are one count line by default."""
    parser.add_argument(
        "--unmanaged",
        action="store_true",
        help="name every stream and consumer on the server that the topology does not declare "
        "(by default they are counted in one line)",
    )
    parser.add_argument(
        "--changes-only",
        action="store_true",
        help="print only what is to change or was refused, not what is unchanged",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``natsbus`` command."""
    parser = Parser(
        prog=PROG,
        description="Declarative NATS JetStream setup: validate, plan, apply and verify a "
        "topology file; inspect and export a live server; run a development server.",
        epilog="Exit codes: 0 ok, 1 error (problems, drift, refused change, usage), "
        "2 changes pending (plan only); check exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. "
        "Connection flags may also come before the command.",
    )
    parser.add_argument("--version", action="version", version=f"natsbus {__version__}")
    hidden_connection_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    conn = connection_flags()

    p = sub.add_parser(
        "validate",
        help="check a topology file offline (exit 0 ok, 1 problems)",
        description="Check a topology file without a server. Prints every problem as "
        "file:line: field: message.",
    )
    p.add_argument(
        "topology",
        metavar="TOPOLOGY",
        nargs="+",
        help="topology file(s) or directories (merged), or - for stdin",
    )
    json_flag(p, "the result")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "plan",
        parents=[conn],
        help="show what apply would do (exit 0 nothing to do, 2 changes pending, 1 error)",
        description="Compare a topology with the live server and show what apply would do. "
        "Changes nothing.",
    )
    p.add_argument(
        "topology",
        metavar="TOPOLOGY",
        nargs="+",
        help="topology file(s) or directories (merged), or - for stdin",
    )
    p.add_argument(
        "--allow-destructive",
        action="store_true",
        help="plan destructive changes as allowed",
    )
    json_flag(p, "the plan")
    plan_view_flags(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "apply",
        parents=[conn],
        help="create and update streams and consumers (idempotent)",
        description="Apply a topology: create what is missing, update in place what the server "
        "allows, refuse blocked changes (nothing is changed then). Never deletes anything.",
    )
    p.add_argument(
        "topology",
        metavar="TOPOLOGY",
        nargs="+",
        help="topology file(s) or directories (merged), or - for stdin",
    )
    p.add_argument(
        "--allow-destructive",
        action="store_true",
        help="also apply changes that can delete data (lowered limits, retention, subjects)",
    )
    p.add_argument(
        "--create-only",
        action="store_true",
        help="only create what is missing: never update, never refuse; differences left "
        "alone are reported as a warning (for agents and init jobs during a rollout)",
    )
    p.add_argument(
        "--wait",
        type=duration_arg,
        metavar="DURATION",
        help="wait up to DURATION (500ms, 30s, 2m) for the server and JetStream to be ready",
    )
    json_flag(p, "the executed plan")
    plan_view_flags(p)
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser(
        "verify",
        parents=[conn],
        help="check that the live server matches (exit 0 match, 1 drift or missing)",
        description="Exit 0 when every stream and consumer of the topology exists on the server "
        "with the declared configuration; otherwise print the differences and exit 1.",
    )
    p.add_argument(
        "topology",
        metavar="TOPOLOGY",
        nargs="+",
        help="topology file(s) or directories (merged), or - for stdin",
    )
    json_flag(p, "the result")
    plan_view_flags(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "status",
        parents=[conn],
        help="streams and consumers: messages, replicas, pending, ack pending, last active",
        description="A table of the server's streams (messages, bytes, replicas, leader) and "
        "consumers (pending, ack pending against max_ack_pending, ack floor, redelivered, "
        "waiting pulls, last active). With TOPOLOGY (a file), only its streams, and those "
        "declared but missing are marked MISSING. With STREAM (a stream name), that stream "
        "in detail: its replicas and its consumers.",
    )
    p.add_argument("target", metavar="TOPOLOGY | STREAM", nargs="?")
    json_flag(p, "the status")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "check",
        parents=[conn],
        help="health check for monitoring (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)",
        description="Check the connection, the streams (replicas, leader, replica lag) and "
        "the consumers (lag, ack pending against max_ack_pending, inactivity, redeliveries, "
        "waiting pulls) and exit with the Nagios code: 0 OK, 1 WARNING, 2 CRITICAL, "
        "3 UNKNOWN. With TOPOLOGY, its streams and declared consumers (a missing one is "
        "CRITICAL); without, every stream and durable consumer on the server. Thresholds "
        "declared on a consumer (lag_warn: ... in the topology, kept in its metadata) win "
        "over the options, which are the defaults for the others.",
        epilog="A consumer at its max_ack_pending is CRITICAL (stalled); a replicated "
        "stream without a leader CRITICAL, a replica offline or behind WARNING; no "
        "connection CRITICAL; what cannot be read UNKNOWN. --timeout bounds each request.",
    )
    p.usage_exit = EXIT_UNKNOWN
    p.add_argument("topology", metavar="TOPOLOGY", nargs="?")
    for what, unit, kind in (
        ("lag", "messages not yet delivered", count_arg),
        ("ack-pending", "messages delivered and not acked", count_arg),
        ("inactive", "time without a delivery or ack while work is waiting", duration_arg),
    ):
        metavar = "DURATION" if kind is duration_arg else "N"
        for level, grade in (("warn", "WARNING"), ("crit", "CRITICAL")):
            p.add_argument(
                f"--{what}-{level}",
                type=kind,
                metavar=metavar,
                help=f"{grade} at {metavar} or more {unit}",
            )
    p.add_argument(
        "--stream",
        dest="streams",
        metavar="NAME",
        action="append",
        help="check only this stream (repeatable)",
    )
    json_flag(p, "the report")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "export",
        parents=[conn],
        help="print the live configuration as a topology file",
        description="Print the server's streams (all, or the named ones) and their consumers as "
        "a topology file that natsbus apply accepts.",
    )
    p.add_argument("streams", metavar="STREAM", nargs="*")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    json_flag(p, "the topology")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import",
        help="turn nats stream/consumer add scripts and natscli JSON into a topology file",
        description="Read `nats stream add` / `nats stream update` / `nats consumer add` command "
        "lines in shell scripts and natscli JSON (stream or consumer configs, `nats stream info "
        '--json`, `nats consumer info --json`, lists, {"streams": [...]}) and write one '
        "topology file. Every flag or field that can not be mapped is reported with its file and "
        "line, and the exit code is 1 then (the file is still written).",
    )
    p.add_argument("files", metavar="FILE", nargs="+")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "dead-letters",
        parents=[conn],
        help="list a dead-letter stream's messages; --redrive sends them back",
        description="List the messages of dead-letter stream STREAM with where each came from "
        "(stream, consumer, subject, sequence, deliveries) and why it was given up on. With "
        "--redrive, publish each to its original subject again (without the dead-letter "
        "headers) and remove it from STREAM once stored.",
    )
    p.add_argument("stream", metavar="STREAM", help="the dead-letter stream")
    p.add_argument("--redrive", action="store_true", help="re-drive them to their subjects")
    p.add_argument(
        "--seq",
        metavar="N",
        type=int,
        action="append",
        help="only the dead letter at sequence N of STREAM (repeatable)",
    )
    json_flag(p, "the dead letters")
    p.set_defaults(func=cmd_dead_letters)

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


def run(args: argparse.Namespace) -> int:
    result = args.func(args)
    if asyncio.iscoroutine(result):
        code: int = asyncio.run(result)
        return code
    return int(result)


def _log_warnings_to_stderr() -> None:
    """Show what the library warns about (a lost connection, what apply --create-only left
    alone) as ``natsbus: warning: ...`` lines, like the command's own errors."""
    import logging

    logger = logging.getLogger("natsbus")
    if logger.handlers:
        return

    class Lower(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"natsbus: {record.levelname.lower()}: {record.getMessage()}"

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Lower())
    # An error the server sends fails the command, which reports it itself.
    handler.addFilter(lambda r: not r.getMessage().startswith("server error:"))
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``natsbus`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    _log_warnings_to_stderr()
    try:
        return run(args)
    except (natsbus.NatsbusError, CliError) as exc:
        eprint(f"error: {exc}")
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. `natsbus export | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:  # e.g. export -o into a missing directory
        eprint(f"error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        eprint("interrupted")
        return EXIT_INTERRUPTED
