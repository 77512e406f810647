"""One throwaway nats-server: config, launch, readiness, restart, lame duck, kill."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from typing_extensions import Self

from ._binary import ServerStartError, find_server_binary
from ._process import (
    LOG_TAIL_LINES,
    Started,
    StrPath,
    free_ports,
    hostport,
    launch,
    quote,
    reap,
    remove_tree,
)


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


class NatsServer(Started):
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
        ports = free_ports(2 if port is None else 1, host)
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
        return f"{scheme}://{hostport(self._host, self._port)}"

    @property
    def server_name(self) -> Optional[str]:
        """The ``server_name`` given at construction (cluster nodes: ``n1``, ``n2``...)."""
        return self._server_name

    @property
    def monitor_url(self) -> str:
        """The HTTP monitoring base URL, e.g. ``http://127.0.0.1:<port>`` (``/varz``, ``/jsz``)."""
        return f"http://{hostport(self._host, self._monitor_port)}"

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
                self._port, self._monitor_port = free_ports(2, self._host)
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
            self._workdir_finalizer = weakref.finalize(self, remove_tree, self._workdir)
        return self._workdir

    def _render_config(self) -> str:
        lines = [
            "# generated by natsbus.testing",
            f"listen: {quote(hostport(self._host, self._port))}",
            f"http: {quote(hostport(self._host, self._monitor_port))}",
        ]
        if self._server_name is not None:
            lines.append(f"server_name: {quote(self._server_name)}")
        if self._debug:
            lines.append("debug: true")
        if self._jetstream:
            domain = (
                f"\n  domain: {quote(self._jetstream_domain)}" if self._jetstream_domain else ""
            )
            lines.append(f"jetstream {{\n  store_dir: {quote(self.store_dir)}{domain}\n}}")
        if self._user is not None:
            lines.append(
                "authorization {\n"
                f"  user: {quote(self._user)}\n"
                f"  password: {quote(self._password)}\n"
                "}"
            )
        if self._token is not None:
            lines.append(f"authorization {{\n  token: {quote(self._token)}\n}}")
        if self._tls is not None:
            tls = [
                f"  cert_file: {quote(os.fspath(self._tls.cert_file))}",
                f"  key_file: {quote(os.fspath(self._tls.key_file))}",
            ]
            if self._tls.ca_file is not None:
                tls.append(f"  ca_file: {quote(os.fspath(self._tls.ca_file))}")
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
        log = open(self.log_file, "ab")  # noqa: SIM115 - closed by reap
        try:
            process = launch(binary, ["-c", config_file], log=log, cwd=self._ensure_workdir())
        except BaseException:
            log.close()
            raise
        self._process = process
        # Reaps the process when this object is collected or the interpreter exits.
        self._process_finalizer = weakref.finalize(self, reap, process, log)

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
        lines = text.splitlines()[-LOG_TAIL_LINES:]
        tail = "\n".join(lines)
        for secret in (self._password, self._token):
            if secret:
                tail = tail.replace(secret, "<hidden>")
        return tail

    def _describe_failure(self, what: str) -> str:
        tail = self._log_tail()
        return f"{what}: {self!r}\n--- log tail ({self.log_file}) ---\n{tail or '(empty)'}"
