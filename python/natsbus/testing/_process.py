"""What every started nats-server shares: ports, reaping, clean-up, the with-protocol."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    from typing_extensions import Self


StrPath = Union[str, "os.PathLike[str]"]


STOP_GRACE_SECONDS = 5.0


LOG_TAIL_LINES = 30


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
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


def quote(value: object) -> str:
    """A string literal for the nats-server config format (JSON string escaping is accepted)."""
    return json.dumps(str(value))


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def launch(
    binary: str,
    args: Sequence[str],
    *,
    log: Optional[IO[bytes]] = None,
    cwd: Optional[str] = None,
) -> subprocess.Popen[bytes]:
    """Start ``binary`` (a nats-server) with ``args``: the one place natsbus launches one.

    Output goes to ``log`` (both streams), or to this process's terminal when ``None``
    (``natsbus server``). Stdin is closed. The process stays in our process group, so whatever
    kills the whole run (Ctrl-C, a CI timeout) takes the server with it even if no clean-up runs.
    Stop it with :func:`reap`.
    """
    return subprocess.Popen(
        [binary, *args],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        cwd=cwd,
    )


def reap(process: subprocess.Popen[bytes], log: Optional[IO[bytes]] = None) -> None:
    """Stop a server process: SIGTERM, wait, then SIGKILL; always wait so no zombie is left."""
    try:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        if log is not None:
            log.close()


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Started:
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
