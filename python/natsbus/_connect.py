"""``natsbus.connect``: options from arguments and the environment."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from . import _natsbus, errors
from ._bus import Bus
from ._events import EventCallback

log = logging.getLogger("natsbus.connection")

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class TLS:
    """TLS settings for ``connect``.

    ``ca``: CA bundle to trust (PEM). ``cert``/``key``: client certificate and
    key for mutual TLS. ``handshake_first``: start TLS before the server's
    INFO (servers configured with ``handshake_first: true``).
    """

    ca: Optional[PathLike] = None
    cert: Optional[PathLike] = None
    key: Optional[PathLike] = None
    handshake_first: bool = False


def _servers(servers: Union[str, Sequence[str], None]) -> list[str]:
    if servers is None:
        servers = os.environ.get("NATS_URL") or DEFAULT_URL
    if isinstance(servers, str):
        out = [s.strip() for s in servers.split(",") if s.strip()]
    else:
        out = [str(s).strip() for s in servers if str(s).strip()]
    if not out:
        raise errors.InvalidArgumentError("no server given: pass a URL or set $NATS_URL")
    return out


def _redacted(servers: list[str]) -> list[str]:
    """Server URLs with any password or token hidden."""
    out = []
    for s in servers:
        scheme, sep, rest = s.rpartition("://")
        userinfo, at, host = rest.rpartition("@")
        if at:
            user = userinfo.split(":", 1)[0] + ":***" if ":" in userinfo else "***"
            rest = f"{user}@{host}"
        out.append(f"{scheme}{sep}{rest}")
    return out


def _env_timeout() -> float:
    """``$NATS_TIMEOUT`` as natscli reads it (``5s``, ``500ms``, or seconds), else 5 s."""
    text = os.environ.get("NATS_TIMEOUT")
    if not text:
        return 5.0
    from .cli._durations import parse_duration

    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text)
    except ValueError as e:
        raise errors.InvalidArgumentError(f"$NATS_TIMEOUT: {e}") from None


def _path(p: Optional[PathLike]) -> Optional[str]:
    return None if p is None else os.fspath(p)


class Connecting:
    """What ``natsbus.connect(...)`` returns: await it for a ``Bus``, or use it
    as ``async with natsbus.connect(...) as bus:`` to close the bus on exit."""

    __slots__ = (
        "_bus",
        "_direct_publish",
        "_heal",
        "_kwargs",
        "_on_event",
        "_servers",
        "_topology",
        "_wait",
    )

    def __init__(
        self,
        servers: list[str],
        topology: Any,
        kwargs: dict[str, Any],
        direct_publish: bool = True,
        *,
        wait: float = 0.0,
        heal: bool = True,
        on_event: Optional[EventCallback] = None,
    ) -> None:
        self._servers = servers
        self._topology = topology
        self._kwargs = kwargs
        self._direct_publish = direct_publish
        self._wait = wait
        self._heal = heal
        self._on_event = on_event
        self._bus: Optional[Bus] = None

    async def _connect(self) -> Bus:
        topology = None
        if self._topology is not None:
            from ._topology import as_topology

            # Validate before connecting: a bad file fails fast and offline.
            topology = as_topology(self._topology)
        bus = Bus(await self._first_connection())
        bus._start_events(self._on_event)
        if self._direct_publish:
            from . import _publish_conn

            await _publish_conn.start(bus)
        if topology is not None:
            bus._core.set_topology(topology, heal=self._heal)
        return bus

    async def _first_connection(self) -> Any:
        """The core connection; with ``wait``, tried again until it answers or time is up.

        Rejected credentials and bad arguments fail at once: waiting would
        not fix them.
        """
        shown = ", ".join(_redacted(self._servers))
        if self._wait <= 0:
            return await _natsbus.connect(self._servers, **self._kwargs)
        started = time.monotonic()
        deadline = started + self._wait
        pause = 0.1
        attempts = 0
        while True:
            remaining = deadline - time.monotonic()
            kwargs = dict(self._kwargs)
            kwargs["connect_timeout"] = max(0.1, min(self._kwargs["connect_timeout"], remaining))
            attempts += 1
            try:
                core = await _natsbus.connect(self._servers, **kwargs)
            except errors.AuthError:
                raise
            except errors.ConnectError as e:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.ConnectError(
                        f"could not connect to {shown} within {self._wait:g}s (wait=; "
                        f"{attempts} attempts): {e}"
                    ) from e
                if attempts == 1:
                    log.warning("waiting up to %gs for NATS at %s: %s", self._wait, shown, e)
                else:
                    log.debug("still waiting for NATS at %s (%.0fs left): %s", shown, remaining, e)
                await asyncio.sleep(min(pause, remaining))
                pause = min(pause * 2, 2.0)
                continue
            if attempts > 1:
                log.info(
                    "connected to %s after %.1fs of waiting", shown, time.monotonic() - started
                )
            return core

    def __await__(self) -> Generator[Any, None, Bus]:
        return self._connect().__await__()

    async def __aenter__(self) -> Bus:
        self._bus = await self._connect()
        return self._bus

    async def __aexit__(self, *exc: object) -> None:
        if self._bus is not None:
            await self._bus.close()
            self._bus = None


def connect(
    servers: Union[str, Sequence[str], None] = None,
    *,
    user: Optional[str] = None,
    password: Optional[str] = None,
    token: Optional[str] = None,
    nkey_seed: Optional[str] = None,
    creds: Optional[PathLike] = None,
    tls: Optional[TLS] = None,
    name: Optional[str] = None,
    topology: Any = None,
    connect_timeout: Optional[float] = None,
    max_reconnects: Optional[int] = None,
    direct_publish: bool = True,
    inbox_prefix: Optional[str] = None,
    domain: Optional[str] = None,
    wait: float = 0.0,
    heal: bool = True,
    on_event: Optional[EventCallback] = None,
    context: Optional[str] = None,
) -> Connecting:
    """Connect to NATS.

    ``servers`` is a URL, a comma-separated list or a list of URLs; by default
    ``$NATS_URL``, else ``nats://127.0.0.1:4222``. Credentials default to
    ``$NATS_USER``/``$NATS_PASSWORD``, ``$NATS_TOKEN``, ``$NATS_NKEY_SEED`` and
    ``$NATS_CREDS`` when none is passed. The client reconnects forever unless
    ``max_reconnects`` is set. ``topology`` (path, dict or ``Topology``) is
    validated now and used by ``bus.ensure_streams()``.

    ``direct_publish`` (default on): ``await bus.publish(...)`` goes through
    a second connection that the event loop reads and writes itself, so the
    PubAck reaches the awaiting task without a thread hand-off (about a
    quarter less latency per publish). Publishes fall back to the main
    connection whenever that one is not open. Pass ``False`` for a single
    connection per bus (e.g. an account with a connection limit).

    ``inbox_prefix`` (default ``$NATS_INBOX_PREFIX``, else ``_INBOX``): where
    reply subjects live, for a user the server allows only its own inbox
    (e.g. ``subscribe: "_INBOX_agent.>"``). ``domain``: the JetStream domain
    to manage and consume, e.g. a leafnode's from its hub (the API becomes
    ``$JS.<domain>.API``).

    ``wait`` (seconds, default 0): keep trying the first connection this
    long, for an agent that may start before NATS does. What it waits for is
    logged (logger ``natsbus.connection``). A rejected credential never
    waits.

    ``heal`` (default on, used only with a ``topology``): when the server
    loses a declared stream or consumer (a restart with memory storage, a
    wiped data directory), the bus re-creates it, create-only, and its
    publishes, consumers and workers carry on; each heal is logged at
    WARNING (logger ``natsbus.heal``). ``heal=False`` turns that off.

    ``on_event``: a function or coroutine function called with each
    ``natsbus.Event`` (the connection lost and back, lame duck mode, slow
    consumers, server errors, heals); they are also logged under
    ``natsbus.connection`` and readable as ``async for e in bus.events()``.

    ``context``: a natscli context (``nats context add``) by name or path,
    default ``$NATS_CONTEXT``: its servers, credentials, TLS files, inbox
    prefix and JetStream domain are used for what is not given here or in
    the ``NATS_*`` variables (``NATS_URL``, ``NATS_USER``/``NATS_PASSWORD``,
    ``NATS_TOKEN``, ``NATS_CREDS``, ``NATS_NKEY``, ``NATS_CA``,
    ``NATS_CERT``, ``NATS_KEY``, ``NATS_TIMEOUT`` as natscli reads them).
    ``connect_timeout`` defaults to ``$NATS_TIMEOUT``, else 5 s.

    A rejected credential raises ``AuthError`` and an unreachable server
    ``ConnectError``, each within ``connect_timeout`` seconds. A subject or
    inbox the server does not let this user use raises ``AuthError`` naming
    it, at once.

    Use ``bus = await natsbus.connect(...)`` or ``async with natsbus.connect(...) as bus:``.
    """
    from ._context import named_context

    env = os.environ
    ctx = named_context(context)
    explicit = any(x is not None for x in (user, password, token, nkey_seed, creds))
    if not explicit:
        if env.get("NATS_USER") or env.get("NATS_PASSWORD"):
            user, password = env.get("NATS_USER"), env.get("NATS_PASSWORD")
        elif env.get("NATS_TOKEN"):
            token = env["NATS_TOKEN"]
        elif env.get("NATS_NKEY_SEED") or env.get("NATS_NKEY"):
            # NATS_NKEY is natscli's: a file holding the seed (natsbus reads either).
            nkey_seed = env.get("NATS_NKEY_SEED") or env["NATS_NKEY"]
        elif env.get("NATS_CREDS"):
            creds = env["NATS_CREDS"]
        elif ctx is not None:
            user, password = ctx.get("user"), ctx.get("password")
            token = ctx.get("token") if user is None else None
            creds = ctx.get("creds")
            nkey_seed = ctx.get("nkey")
    if servers is None and not env.get("NATS_URL") and ctx is not None:
        servers = ctx.get("url")
    if tls is None:
        ca = env.get("NATS_CA") or (ctx.get("ca") if ctx else None)
        cert = env.get("NATS_CERT") or (ctx.get("cert") if ctx else None)
        key = env.get("NATS_KEY") or (ctx.get("key") if ctx else None)
        first = bool(ctx.get("tls_first")) if ctx else False
        if ca or cert or key or first:
            tls = TLS(ca=ca, cert=cert, key=key, handshake_first=first)
    if inbox_prefix is None:
        inbox_prefix = env.get("NATS_INBOX_PREFIX") or (ctx.get("inbox_prefix") if ctx else None)
    if domain is None and ctx is not None:
        domain = ctx.get("jetstream_domain")
    if connect_timeout is None:
        connect_timeout = _env_timeout()
    server_list = _servers(servers)
    kwargs: dict[str, Any] = {
        "user": user,
        "password": password,
        "token": token,
        "nkey_seed": nkey_seed,
        "creds": _path(creds),
        "name": name,
        "connect_timeout": connect_timeout,
        "max_reconnects": max_reconnects,
        "inbox_prefix": inbox_prefix or None,
        "domain": domain,
    }
    if tls is not None:
        kwargs.update(
            tls=True,
            tls_ca=_path(tls.ca),
            tls_cert=_path(tls.cert),
            tls_key=_path(tls.key),
            tls_handshake_first=tls.handshake_first,
        )
    elif any(s.startswith("tls://") for s in server_list):
        kwargs["tls"] = True
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or wait < 0 or wait != wait:
        raise errors.InvalidArgumentError(f"wait must be a number of seconds >= 0, got {wait!r}")
    if on_event is not None and not callable(on_event):
        raise errors.InvalidArgumentError(f"on_event must be callable, got {on_event!r}")
    return Connecting(
        server_list,
        topology,
        kwargs,
        direct_publish,
        wait=float(wait),
        heal=bool(heal),
        on_event=on_event,
    )
