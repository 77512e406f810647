"""The commands that work on a topology or a live server."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import natsbus

from .._dead_letters import select
from ._common import EXIT_ERROR, EXIT_OK, EXIT_PENDING, CliError, eprint, print_json
from ._connection import connect_waiting, session
from ._render import problem_dict, render_dead_letters, render_status, topology_summary


def load_topology(path: str) -> natsbus.Topology:
    """Load and validate a topology file (raises ``TopologyError``)."""
    return natsbus.Topology.load(path)


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
                    "file": args.topology,
                    "problems": [problem_dict(p) for p in problems],
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
        print_json(
            {
                "ok": True,
                "file": args.topology,
                "streams": topo.streams,
                "consumers": [f"{s}/{c}" for s, c in topo.consumers],
                "problems": [],
            }
        )
    else:
        print(f"{args.topology}: ok ({topology_summary(topo)})")
    return EXIT_OK


async def cmd_plan(args: argparse.Namespace) -> int:
    """What apply would do; exit 2 when anything is pending."""
    topo = load_topology(args.topology)
    async with session(args) as bus:
        plan = await bus.plan(topo, allow_destructive=args.allow_destructive)
    if args.json:
        print_json(plan.to_dict())
    else:
        print(str(plan).rstrip())
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
                print(str(refused).rstrip())
            eprint(f"error: {exc}")
            return EXIT_ERROR
    finally:
        await bus.close()
    if args.json:
        print_json({"applied": True, "error": None, "plan": plan.to_dict()})
    else:
        print(str(plan).rstrip())
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
                print(str(drift).rstrip())
            eprint(f"error: {exc}")
            return EXIT_ERROR
    if args.json:
        print_json({"ok": True, "error": None, "plan": plan.to_dict()})
    else:
        print(f"ok: the server matches {args.topology} ({topology_summary(topo)})")
    return EXIT_OK


async def cmd_status(args: argparse.Namespace) -> int:
    """Streams and consumers with their counters (only the topology's, when one is given)."""
    topo = load_topology(args.topology) if args.topology else None
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
