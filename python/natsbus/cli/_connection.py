"""From connection flags to a bus; waiting for a server that is not up yet."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any, Optional

import natsbus

from .. import _natsbus
from ._common import CliError, eprint


def timeout_of(args: argparse.Namespace) -> float:
    """--timeout, else $NATS_TIMEOUT (as natscli reads it), else 5 s."""
    if args.timeout is not None:
        return float(args.timeout)
    from .._connect import _env_timeout

    return _env_timeout()


def connect_kwargs(args: argparse.Namespace) -> dict[str, Any]:
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
        "connect_timeout": timeout_of(args),
        "inbox_prefix": args.inbox_prefix,
        "domain": args.domain,
        "context": args.context,
        # The CLI does not publish: one connection is enough.
        "direct_publish": False,
    }


def server_label(args: argparse.Namespace) -> str:
    """The server address(es) for messages, without any credentials embedded in a URL."""
    raw = args.server or os.environ.get("NATS_URL")
    if not raw:
        from .._context import named_context

        try:
            ctx = named_context(getattr(args, "context", None))
        except natsbus.NatsbusError:
            ctx = None
        raw = (ctx.get("url") if ctx else None) or "nats://127.0.0.1:4222"
    return _natsbus.redact_url(raw)


def session(args: argparse.Namespace) -> natsbus.Connecting:
    """``async with session(args) as bus:`` connects and closes the bus afterwards."""
    return natsbus.connect(args.server, **connect_kwargs(args))


async def connect_waiting(args: argparse.Namespace, wait: float) -> natsbus.Bus:
    """Connect, retrying until the server is up and JetStream answers, for ``wait`` seconds.

    Rejected credentials and bad arguments fail at once: waiting would not fix them.
    """
    kwargs = connect_kwargs(args)
    deadline = time.monotonic() + wait
    delay = 0.1
    announced = False
    last_error = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        bus: Optional[natsbus.Bus] = None
        try:
            kwargs["connect_timeout"] = max(0.1, min(timeout_of(args), remaining))
            bus = await natsbus.connect(args.server, **kwargs)
            health = await bus.health(timeout=max(0.1, min(2.0, remaining)))
            if health.ok:
                if announced:
                    eprint(f"server at {server_label(args)} is ready")
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
                f"server at {server_label(args)} was not ready within {wait:g}s: {last_error}"
            )
        if not announced:
            eprint(f"waiting up to {wait:g}s for the server at {server_label(args)} ...")
            announced = True
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 1.0)
