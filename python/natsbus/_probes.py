"""Liveness and readiness over HTTP for agents without a web framework.

``probes = await bus.serve_probes(8080)`` answers ``GET /healthz`` (200 while the bus
is connected) and ``GET /readyz`` (200 while ``bus.check()`` is OK or WARNING), each
with a JSON body, on the asyncio loop itself (``asyncio.start_server``, nothing but
the standard library). Each answer is cached for ``cache`` seconds and concurrent
requests share one check in flight, so a storm of probes costs one check. A client
gets ``client_timeout`` seconds to send its request and read the answer; a request
that is too large or not HTTP gets a 400 and is closed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from ._bus import Bus

__all__ = ["Probes", "start_probes"]

_MAX_REQUEST = 8192
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}

_Answer = tuple[int, dict[str, Any]]


class _Cached:
    """One answer, recomputed at most once per ``ttl`` seconds; callers in between share it."""

    def __init__(self, compute: Callable[[], Awaitable[_Answer]], ttl: float) -> None:
        self._compute = compute
        self._ttl = ttl
        self._value: Optional[_Answer] = None
        self._at = 0.0
        self._pending: Optional[asyncio.Future[_Answer]] = None

    async def get(self) -> _Answer:
        if self._value is not None and time.monotonic() - self._at < self._ttl:
            return self._value
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._refresh())
        # shield: a client going away must not cancel the check the others wait for.
        return await asyncio.shield(self._pending)

    async def _refresh(self) -> _Answer:
        try:
            value = await self._compute()
        except Exception as exc:  # the probe answers 503 instead of dying
            value = (503, {"status": "unknown", "error": str(exc) or type(exc).__name__})
        finally:
            self._pending = None
        self._value, self._at = value, time.monotonic()
        return value


class Probes:
    """A running probe server; ``bus.serve_probes()`` starts one.

    ``.port`` is the bound port (useful with ``port=0``), ``.url`` its base URL.
    ``await probes.close()`` stops it; ``async with probes:`` closes it on exit.
    """

    def __init__(
        self,
        bus: Bus,
        check_options: Mapping[str, Any],
        *,
        timeout: float,
        cache: float,
        client_timeout: float,
    ) -> None:
        self._bus = bus
        self._check_options = dict(check_options)
        self._timeout = timeout
        self._client_timeout = client_timeout
        self._server: Optional[asyncio.base_events.Server] = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._health = _Cached(self._healthz, cache)
        self._ready = _Cached(self._readyz, cache)
        self._host = ""
        self._port = 0

    async def _start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=_MAX_REQUEST)
        sockname = self._server.sockets[0].getsockname()
        self._host, self._port = str(sockname[0]), int(sockname[1])

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self._port

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def url(self) -> str:
        """``http://host:port`` (``127.0.0.1`` when listening on every address)."""
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
        if ":" in host:
            host = "[::1]" if host == "::" else f"[{host}]"
        return f"http://{host}:{self._port}"

    @property
    def serving(self) -> bool:
        """True until ``close()``."""
        return self._server is not None and self._server.is_serving()

    async def close(self) -> None:
        """Stop listening and drop the connections still open. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._clients):
            writer.close()
        await server.wait_closed()

    async def __aenter__(self) -> Probes:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "serving" if self.serving else "closed"
        return f"<natsbus.Probes {self.url} {state}>"

    # -- answers -----------------------------------------------------------------------------

    async def _healthz(self) -> _Answer:
        health = await self._bus.health(timeout=self._timeout)
        return (200 if health.connected else 503), health.to_dict()

    async def _readyz(self) -> _Answer:
        report = await self._bus.check(**self._check_options, timeout=self._timeout)
        ready = report.status in ("ok", "warning")
        return (200 if ready else 503), report.to_dict()

    # -- HTTP --------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            await asyncio.wait_for(self._exchange(reader, writer), self._client_timeout)
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a slow, silent or vanished client: just hang up
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await self._respond(writer, 400, {"error": "request too large"}, head_only=False)
            return
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                await self._respond(writer, 400, {"error": "incomplete request"}, head_only=False)
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await self._respond(writer, 400, {"error": "not an HTTP request"}, head_only=False)
            return
        method, target = parts[0], parts[1]
        path = target.split("?", 1)[0]
        head_only = method == "HEAD"
        if path not in ("/healthz", "/readyz"):
            await self._respond(writer, 404, {"error": f"no such path: {path}"}, head_only)
            return
        if method not in ("GET", "HEAD"):
            await self._respond(
                writer, 405, {"error": f"{method} not allowed"}, head_only, allow=True
            )
            return
        status, body = await (self._health if path == "/healthz" else self._ready).get()
        await self._respond(writer, status, body, head_only)

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: Mapping[str, Any],
        head_only: bool,
        *,
        allow: bool = False,
    ) -> None:
        payload = (json.dumps(body, default=str) + "\n").encode()
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            "Cache-Control: no-store",
            "Connection: close",
        ]
        if allow:
            lines.append("Allow: GET, HEAD")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(payload)
        await writer.drain()


async def start_probes(
    bus: Bus,
    port: int,
    host: str,
    check_options: Mapping[str, Any],
    *,
    timeout: float,
    cache: float,
    client_timeout: float,
) -> Probes:
    probes = Probes(bus, check_options, timeout=timeout, cache=cache, client_timeout=client_timeout)
    await probes._start(host, port)
    return probes
