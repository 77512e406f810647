"""Keeps a bus's loop-driven publish connection open.

``await bus.publish(...)`` goes through a second connection whose socket the
asyncio loop itself reads and writes (the protocol is ``PublishConn`` in Rust,
see ``src/publish_conn.rs``): the PubAck then reaches the awaiting task without a
thread hand-off. This module opens that connection (TCP, TLS like the main
connection, CONNECT with the same credentials), reopens it after a loss with
backoff, and closes it with the bus. While it is not open, publishes use the
main connection, so nothing waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, Any, Optional

from . import _natsbus
from .errors import AuthError, ConnectError

if TYPE_CHECKING:
    from ._bus import Bus
    from ._natsbus import PublishConn

log = logging.getLogger("natsbus")

# Backoff between attempts to (re)open the connection.
FIRST_DELAY = 0.1
MAX_DELAY = 5.0
# How long connect() waits for the first attempt before going on without it.
FIRST_ATTEMPT_LIMIT = 2.0


def _ssl_context(tls: Optional[tuple[Any, Any, Any, bool]]) -> ssl.SSLContext:
    ca, cert, key, _ = tls if tls is not None else (None, None, None, False)
    ctx = ssl.create_default_context(cafile=None if ca is None else str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), None if key is None else str(key))
    return ctx


def _parse_url(url: str) -> Optional[tuple[str, int]]:
    """``host:port`` from a server's ``connect_urls``."""
    host, sep, port = url.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _refused_for_good(e: Exception) -> bool:
    return isinstance(e, AuthError) or "connections exceeded" in str(e)


class _Protocol(_natsbus.PublishConn, asyncio.BufferedProtocol):
    """``PublishConn`` as a buffered protocol: asyncio then reads into the
    connection's own buffer (``get_buffer``) instead of a new bytes object
    per read."""

    __slots__ = ()


class _Keeper:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        targets, tls, timeout = bus._core.publish_connection_plan()
        self.targets: list[tuple[str, int, bool]] = list(targets)
        self.tls = tls
        self.timeout = timeout
        self._ctx: Optional[ssl.SSLContext] = None
        self.conn: Optional[PublishConn] = None
        # Cluster servers announced by the last server we were connected to.
        self.discovered: list[str] = []

    def ssl_context(self) -> ssl.SSLContext:
        if self._ctx is None:
            self._ctx = _ssl_context(self.tls)
        return self._ctx

    async def open_one(self, host: str, port: int, tls_scheme: bool) -> PublishConn:
        loop = asyncio.get_running_loop()
        conn = _Protocol(self.bus._core.publish_setup())
        self.conn = conn
        first = self.tls is not None and self.tls[3]
        transport, _ = await loop.create_connection(
            lambda: conn,
            host,
            port,
            ssl=self.ssl_context() if first else None,
            server_hostname=host if first else None,
        )
        try:
            await conn.info()
            use_tls = conn.use_tls(tls_scheme)
            if use_tls and not first:
                tls_transport = await loop.start_tls(
                    transport, conn, self.ssl_context(), server_hostname=host
                )
                if tls_transport is None:
                    raise ConnectError("TLS upgrade of the publish connection failed")
                conn.set_transport(tls_transport)
                transport = tls_transport
            await conn.handshake(bool(use_tls))
        except BaseException:
            transport.close()
            raise
        return conn

    def candidates(self) -> list[tuple[str, int, bool]]:
        out = list(self.targets)
        for url in self.discovered:
            hp = _parse_url(url)
            if hp is not None and all((h, p) != hp for h, p, _ in out):
                out.append((hp[0], hp[1], False))
        return out

    async def open(self) -> PublishConn:
        """Try the servers in order (the last good one first)."""
        errors = []
        for host, port, tls_scheme in self.candidates():
            try:
                conn = await asyncio.wait_for(self.open_one(host, port, tls_scheme), self.timeout)
            except AuthError:
                raise
            except (OSError, asyncio.TimeoutError, ssl.SSLError, ConnectError) as e:
                errors.append(f"{host}:{port}: {e or type(e).__name__}")
                continue
            self.discovered = list(conn.connect_urls)
            # Keep the server that worked first in line for the next time.
            self.targets.sort(key=lambda t: (t[0], t[1]) != (host, port))
            return conn
        raise ConnectError("; ".join(errors) or "no server to open it on")

    async def run(self, first: asyncio.Future[None]) -> None:
        delay = FIRST_DELAY
        try:
            while not self.bus.closed:
                try:
                    conn = await self.open()
                except Exception as e:
                    if _refused_for_good(e):
                        # The main connection got in with the same settings, so
                        # the server refuses a second one (no permission to
                        # subscribe to inboxes, connection limit): stay on the
                        # main connection rather than knock every few seconds.
                        log.warning("natsbus: publishing through the main connection only: %s", e)
                        return
                    log.debug("natsbus: publish connection not open yet: %s", e)
                else:
                    delay = FIRST_DELAY
                    self.bus._core.attach_publish_connection(conn)
                    if not first.done():
                        first.set_result(None)
                    await conn.lost()
                    self.bus._core.attach_publish_connection(None)
                    log.debug("natsbus: publish connection lost; reopening")
                if not first.done():
                    first.set_result(None)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
        finally:
            if not first.done():
                first.set_result(None)
            if self.conn is not None and not self.bus.closed:
                self.conn.close()


async def start(bus: Bus) -> None:
    """Open the publish connection (waiting up to FIRST_ATTEMPT_LIMIT
    seconds for the first attempt) and keep it open until the bus closes."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[None] = loop.create_future()
    keeper = _Keeper(bus)
    task = loop.create_task(keeper.run(first), name="natsbus-publish-connection")
    bus._core.keep_publish_task(task)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(first), min(keeper.timeout, FIRST_ATTEMPT_LIMIT))
