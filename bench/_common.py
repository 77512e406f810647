"""Shared by the Python workload scripts: the event, the CLI, result checks, RSS.

Each workload script runs ONE workload per process and prints ONE JSON line on stdout
(``{"client", "workload", "n", "seconds", "msgs_per_sec", ...}``); ``bench/run.py`` orchestrates.
Anything that does not check out raises ``BenchError`` and the script exits non-zero without
printing a number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

STREAM = "BENCH"
CONSUMER = "bench-consumer"
SUBJECT = "bench.metric.cpu"
WINDOW = 1024
BATCH = 500
EVENT_TYPE = "metric.cpu"
# Every client sends the same message on the wire: the JSON payload plus the
# Content-Type header natsbus always sets on JSON payloads.
HEADERS = {"Content-Type": "application/json"}


class BenchError(RuntimeError):
    """A result that does not check out: lost, duplicated or foreign messages."""


def make_event(i: int) -> dict[str, Any]:
    """Event ``i``: ~200 bytes as compact JSON (the Rust program builds the same shape)."""
    return {
        "event_id": f"0f8e7a6c-1d2b-4c3a-9e8f-{i:012d}",
        "agent_id": "agent-07",
        "ts": time.time(),
        "type": EVENT_TYPE,
        "payload": {
            "host": "web-01.internal",
            "value": (i % 1000) / 8.0,
            "tags": ["prod", "eu-west-1", "cpu"],
        },
    }


def parse_args(client: str, workloads: Iterable[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"one {client} benchmark workload")
    parser.add_argument("workload", choices=sorted(workloads))
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--stream", default=STREAM)
    parser.add_argument("--consumer", default=CONSUMER)
    parser.add_argument("--subject", default=SUBJECT)
    parser.add_argument("--window", type=int, default=WINDOW)
    parser.add_argument("--batch", type=int, default=BATCH)
    args = parser.parse_args()
    if args.n < 1 or args.window < 1 or args.batch < 1:
        parser.error("--n, --window and --batch must be positive")
    return args


def check_acks(acks: list[Any], stream: str, n: int) -> None:
    """Every publish acked once, by our stream, with a distinct sequence (objects with
    ``.stream``, ``.seq`` and ``.duplicate``, as both clients' PubAck have)."""
    if len(acks) != n:
        raise BenchError(f"{len(acks)} acks, expected {n}")
    seqs = set()
    for ack in acks:
        if ack is None:
            raise BenchError("a publish got no ack")
        if ack.stream != stream:
            raise BenchError(f"ack from stream {ack.stream!r}, expected {stream!r}")
        if ack.duplicate:
            raise BenchError(f"ack for sequence {ack.seq} flagged duplicate")
        seqs.add(ack.seq)
    if len(seqs) != n:
        raise BenchError(f"{len(seqs)} distinct acked sequences, expected {n}")


def check_seqs(seqs: Iterable[int], n: int) -> None:
    """Exactly the stream sequences 1..n, each once (the stream is fresh per workload)."""
    seen = bytearray(n + 1)
    count = 0
    for seq in seqs:
        if not 1 <= seq <= n:
            raise BenchError(f"stream sequence {seq} outside 1..{n}")
        if seen[seq]:
            raise BenchError(f"stream sequence {seq} received twice")
        seen[seq] = 1
        count += 1
    if count != n:
        raise BenchError(f"received {count} messages, expected {n}")


STALL_SECONDS = float(os.environ.get("BENCH_STALL_SECONDS", "30"))


class Watchdog:
    """Fail a consume loop that stops making progress (messages lost or never delivered)
    instead of hanging: ``async with Watchdog(lambda: len(seqs)):``. It polls the progress
    callable once a second, so the loop itself pays nothing."""

    def __init__(self, progress: Callable[[], int], stall: float = STALL_SECONDS) -> None:
        self._progress = progress
        self._stall = stall
        self._task: Any = None
        self.stalled = False

    async def __aenter__(self) -> Watchdog:
        import asyncio

        main = asyncio.current_task()
        assert main is not None

        async def watch() -> None:
            last, since = self._progress(), time.monotonic()
            while True:
                await asyncio.sleep(1.0)
                now = self._progress()
                if now != last:
                    last, since = now, time.monotonic()
                elif time.monotonic() - since > self._stall:
                    self.stalled = True
                    main.cancel()
                    return

        self._task = asyncio.ensure_future(watch())
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._task.cancel()
        if self.stalled:
            raise BenchError(
                f"no message for {self._stall:.0f}s after {self._progress()} "
                "(messages lost or not delivered)"
            )


def rss_mb() -> float:
    """Resident set size of this process in MB (VmRSS from /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise BenchError("no VmRSS in /proc/self/status (Linux only)")


def emit(client: str, workload: str, n: int, seconds: float, **extra: Any) -> None:
    result = {
        "client": client,
        "workload": workload,
        "n": n,
        "seconds": seconds,
        "msgs_per_sec": n / seconds,
    }
    result.update(extra)
    print(json.dumps(result), flush=True)


def main(
    client: str,
    workloads: dict[str, Callable[[argparse.Namespace], Awaitable[tuple[float, dict[str, Any]]]]],
) -> int:
    """Run the chosen workload (a coroutine returning ``(seconds, extra fields)``) and print it."""
    import asyncio

    args = parse_args(client, workloads)
    try:
        seconds, extra = asyncio.run(workloads[args.workload](args))
    except BenchError as err:
        print(f"{client} {args.workload}: FAILED CHECK: {err}", file=sys.stderr)
        return 1
    emit(client, args.workload, args.n, seconds, **extra)
    return 0
