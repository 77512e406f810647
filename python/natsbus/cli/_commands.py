"""The commands that work on a topology or a live server."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional

import natsbus

from .._check import CheckStatus
from .._dead_letters import select
from ._common import EXIT_ERROR, EXIT_OK, EXIT_PENDING, CliError, eprint, print_json
from ._connection import connect_kwargs, connect_waiting, server_label, session, timeout_of
from ._render import (
    problem_dict,
    render_dead_letters,
    render_status,
    render_stream_status,
    topology_summary,
)

# `natsbus check` exits as a Nagios plugin (and `nats server check`) does:
# 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
EXIT_UNKNOWN = 3


def load_topology(paths: Any) -> natsbus.Topology:
    """Load and validate topology files, merged (raises ``TopologyError``)."""
    if isinstance(paths, str):
        return natsbus.Topology.load(paths)
    first, *rest = paths
    return natsbus.Topology.load(first, *rest)


def shown_files(paths: Any) -> str:
    """The topology argument(s) as the messages name them."""
    return paths if isinstance(paths, str) else ", ".join(paths)


def cmd_validate(args: argparse.Namespace) -> int:
    """Offline validation: every problem, one per line."""
    try:
        topo = load_topology(args.topology)
    except natsbus.TopologyError as exc:
        problems = list(exc.problems)
        if args.json:
            print_json(
                {
                    "ok": False,
                    "file": shown_files(args.topology),
                    "problems": [problem_dict(p) for p in problems],
                }
            )
        else:
            for problem in problems:
                print(problem)
            n = len(problems)
            sys.stdout.flush()
            print(
                f"{shown_files(args.topology)}: {n} problem{'s' if n != 1 else ''}",
                file=sys.stderr,
            )
        return EXIT_ERROR
    if args.json:
        print_json(
            {
                "ok": True,
                "file": shown_files(args.topology),
                "streams": topo.streams,
                "consumers": [f"{s}/{c}" for s, c in topo.consumers],
                "problems": [],
            }
        )
    else:
        print(f"{shown_files(args.topology)}: ok ({topology_summary(topo)})")
    return EXIT_OK


def shown(plan: natsbus.Plan, args: argparse.Namespace) -> str:
    """The plan as --unmanaged / --changes-only ask for it."""
    return plan.render(unmanaged=args.unmanaged, changes_only=args.changes_only).rstrip()


async def cmd_plan(args: argparse.Namespace) -> int:
    """What apply would do; exit 2 when anything is pending."""
    topo = load_topology(args.topology)
    async with session(args) as bus:
        plan = await bus.plan(topo, allow_destructive=args.allow_destructive)
    if args.json:
        print_json(plan.to_dict())
    else:
        print(shown(plan, args))
    return EXIT_PENDING if plan.pending else EXIT_OK


async def cmd_apply(args: argparse.Namespace) -> int:
    """Validate offline, wait for the server if asked, apply and print the executed plan."""
    topo = load_topology(args.topology)  # fail before waiting on anything
    if args.wait is not None:
        bus = await connect_waiting(args, args.wait)
    else:
        try:
            bus = await session(args)
        except natsbus.AuthError:
            raise
        except natsbus.ConnectError as exc:
            raise CliError(f"{exc} (is the server up? --wait 30s waits for it)") from None
    try:
        try:
            plan = await bus.ensure_streams(
                topo, allow_destructive=args.allow_destructive, create_only=args.create_only
            )
        except natsbus.ApplyError as exc:
            refused = exc.plan
            if args.json:
                print_json(
                    {
                        "applied": False,
                        "error": str(exc),
                        "plan": refused.to_dict() if refused is not None else None,
                    }
                )
            elif refused is not None:
                print(shown(refused, args))
            eprint(f"error: {exc}")
            return EXIT_ERROR
    finally:
        await bus.close()
    if args.json:
        print_json({"applied": True, "error": None, "plan": plan.to_dict()})
    else:
        print(shown(plan, args))
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the live server matches the topology, 1 on drift or missing streams."""
    topo = load_topology(args.topology)
    async with session(args) as bus:
        try:
            plan = await bus.verify(topo)
        except natsbus.DriftError as exc:
            drift = exc.plan
            if args.json:
                print_json(
                    {
                        "ok": False,
                        "error": str(exc),
                        "plan": drift.to_dict() if drift is not None else None,
                    }
                )
            elif drift is not None:
                print(shown(drift, args))
            eprint(f"error: {exc}")
            return EXIT_ERROR
    if args.json:
        print_json({"ok": True, "error": None, "plan": plan.to_dict()})
    else:
        print(f"ok: the server matches {shown_files(args.topology)} ({topology_summary(topo)})")
    return EXIT_OK


def names_a_topology(target: str) -> bool:
    """``natsbus status X``: X is a topology file when it exists or could only be a path
    (a stream name never holds ``.``, ``/`` or ``\\``), else a stream name."""
    return os.path.exists(target) or any(ch in target for ch in "./\\")


async def cmd_status(args: argparse.Namespace) -> int:
    """Streams and consumers with their counters (only the topology's, when one is given;
    one stream in detail when a stream name is given)."""
    target: Optional[str] = args.target
    if target is not None and not names_a_topology(target):
        return await stream_status(args, target)
    topo = load_topology(target) if target else None
    async with session(args) as bus:
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
        print_json(out)
    else:
        print(render_status(status, missing, missing_consumers))
    return EXIT_OK


async def stream_status(args: argparse.Namespace, stream: str) -> int:
    """``natsbus status STREAM``: one stream, its replicas and its consumers."""
    async with session(args) as bus:
        status = await bus.status([stream])
    found = [s for s in status.get("streams") or [] if s.get("name") == stream]
    if not found:
        raise CliError(f"stream {stream} not found (natsbus status lists the streams)")
    if args.json:
        print_json({"server_version": status.get("server_version"), **found[0]})
    else:
        print(render_stream_status(found[0], status.get("server_version")))
    return EXIT_OK


def check_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "lag_warn": args.lag_warn,
        "lag_crit": args.lag_crit,
        "ack_pending_warn": args.ack_pending_warn,
        "ack_pending_crit": args.ack_pending_crit,
        "inactive_warn": args.inactive_warn,
        "inactive_crit": args.inactive_crit,
        "streams": args.streams,
    }


def print_report(args: argparse.Namespace, report: natsbus.CheckReport, *, brief: bool) -> int:
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.summary if brief else str(report))
    return report.exit_code


def failed_check(status: CheckStatus, message: str) -> natsbus.CheckReport:
    return natsbus.CheckReport((natsbus.Check("connection", "connection", status, message),))


async def cmd_check(args: argparse.Namespace) -> int:
    """Nagios-style check: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

    Every failure is a report too: no connection is CRITICAL, anything else that keeps
    the check from running (a broken topology file, a missing --creds file, a bug)
    UNKNOWN, each as one line.
    """
    try:
        topo = load_topology(args.topology) if args.topology else None
        kwargs = connect_kwargs(args)
    except natsbus.TopologyError as exc:
        lines = [f"UNKNOWN: {exc}", *(str(p) for p in exc.problems)]
        if args.json:
            return print_report(args, failed_check("unknown", str(exc)), brief=True)
        print("\n".join(lines))
        return EXIT_UNKNOWN
    except CliError as exc:
        return print_report(args, failed_check("unknown", str(exc)), brief=True)
    try:
        # heal=False: a check looks, it never creates what is missing.
        bus = await natsbus.connect(args.server, **kwargs, topology=topo, heal=False)
    except natsbus.ConnectError as exc:
        message = f"cannot connect to {server_label(args)}: {exc}"
        return print_report(args, failed_check("critical", message), brief=True)
    except Exception as exc:  # a monitoring check answers UNKNOWN, never a traceback
        message = f"cannot check {server_label(args)}: {exc or type(exc).__name__}"
        return print_report(args, failed_check("unknown", message), brief=True)
    try:
        options = check_options(args)
        report = await bus.check(**options, timeout=timeout_of(args))
    except Exception as exc:
        message = f"check failed: {exc or type(exc).__name__}"
        return print_report(args, failed_check("unknown", message), brief=True)
    finally:
        await bus.close()
    return print_report(args, report, brief=False)


async def cmd_export(args: argparse.Namespace) -> int:
    """The live configuration as a topology file (YAML, or JSON with ``--json``)."""
    streams = list(args.streams) or None
    async with session(args) as bus:
        if args.json:
            text = json.dumps(await bus.export(streams), indent=2) + "\n"
        else:
            text = await bus.export_yaml(streams)
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
        eprint(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


async def cmd_dead_letters(args: argparse.Namespace) -> int:
    """List a dead-letter stream; with ``--redrive`` send its messages back."""
    async with session(args) as bus:
        try:
            letters = select(args.stream, await bus.dead_letters(args.stream), args.seq)
        except natsbus.MessageNotFoundError as exc:
            raise CliError(str(exc)) from None
        redriven = []
        if args.redrive:
            redriven = await bus.redrive(args.stream, seqs=[d.seq for d in letters])
    if args.json:
        out: dict[str, Any] = {
            "stream": args.stream,
            "dead_letters": [d.to_dict() for d in letters],
        }
        if args.redrive:
            out["redriven"] = [d.seq for d in redriven]
        print_json(out)
        return EXIT_OK
    print(render_dead_letters(args.stream, letters))
    if args.redrive:
        left = len(letters) - len(redriven)
        note = f" ({left} without an original subject left alone)" if left else ""
        print(f"re-drove {len(redriven)} message{'s' if len(redriven) != 1 else ''}{note}")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    """Scripts and natscli JSON in, one topology file out; exit 1 if anything was not mapped."""
    from pathlib import Path

    from .._import import import_files, to_yaml

    paths = [Path(f) for f in args.files]
    for path in paths:
        if not path.is_file():
            raise CliError(f"{path}: no such file")
    imported = import_files(paths)
    text = (
        "# Imported by `natsbus import` from "
        + ", ".join(args.files)
        + "\n"
        + to_yaml(imported.topology())
        + "\n"
    )
    problems = list(imported.problems)
    try:
        natsbus.Topology.from_text(text, "yaml", args.output or "<imported>")
    except natsbus.TopologyError as exc:
        problems += [f"the imported topology: {p}" for p in exc.problems]
    if args.output:
        Path(args.output).write_text(text)
        eprint(f"wrote {args.output} ({len(imported.streams)} streams)")
    else:
        sys.stdout.write(text)
    for problem in problems:
        eprint(f"warning: {problem}")
    return EXIT_ERROR if problems else EXIT_OK
