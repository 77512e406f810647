"""The ``natsbus`` command line: the replacement for hand-written JetStream init scripts.

::

    natsbus validate TOPOLOGY                 offline checks only; exit 0 ok, 1 problems
    natsbus plan     TOPOLOGY                 exit 0 nothing to do, 2 changes pending, 1 error
    natsbus apply    TOPOLOGY [--allow-destructive] [--create-only] [--wait 30s]
    natsbus verify   TOPOLOGY                 exit 0 live matches, 1 drift or missing
    natsbus status   [TOPOLOGY | STREAM]      streams and consumers with their counters
    natsbus check    [TOPOLOGY] [thresholds]  exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
    natsbus export   [STREAM ...]             live server config as a topology file
    natsbus import   FILE... [-o FILE]        init scripts and natscli JSON -> a topology file
    natsbus dead-letters STREAM [--redrive]   list or re-drive dead letters
    natsbus server   [--port N] [--store-dir D]   embedded JetStream server for development

plan, apply and verify take ``--unmanaged`` (name what the topology does not declare) and
``--changes-only``.

Every command that talks to a server takes the connection flags (``-s/--server``, ``--user``,
``--password``, ``--token``, ``--creds``, ``--nkey``, ``--tls-ca``, ``--tls-cert``, ``--tls-key``,
``--tls-first``, ``--name``, ``--timeout``, ``--inbox-prefix``, ``--domain``). Expected failures
print one ``natsbus: error: ...`` message on stderr and exit 1; usage errors exit 1 as well, so
that exit code 2 of ``plan`` always means "changes pending". Credentials are never printed.

Also runnable as ``python -m natsbus``. Needs only the standard library besides natsbus itself.
"""

from __future__ import annotations

from ._common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_PENDING, CliError
from ._durations import parse_duration
from ._parser import build_parser, main
from ._render import human_bytes

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PENDING",
    "CliError",
    "build_parser",
    "human_bytes",
    "main",
    "parse_duration",
]
