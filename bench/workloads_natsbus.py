"""natsbus side of the benchmark: one workload per process, one JSON line on stdout.

    python bench/workloads_natsbus.py <workload> --url URL --n N [--window 1024] [--batch 500]

Written against the public API (docs: /work/shared/design/API.md): ``bus.publish(subject, dict)``
(natsbus encodes the dict), ``bus.publish_many``, ``bus.consume(stream, durable)`` iterated with
``async for`` or ``.batches(max_messages=...)``, ``msg.data`` (decoded JSON) and
``await msg.ack()``, and ``bus.worker(stream, durable, handler)``. The stream and consumer are
created by ``bench/run.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

# NATSBUS_BENCH_OTEL (run.py's clients natsbus-nootel and natsbus-otel): "off" runs natsbus
# as if OpenTelemetry were not installed; "sdk" sets up the SDK's tracer provider first
# (spans are then recorded, but the workloads never start one).
if os.environ.get("NATSBUS_BENCH_OTEL") == "off":
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]
elif os.environ.get("NATSBUS_BENCH_OTEL") == "sdk":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())

import natsbus

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    EVENT_TYPE,
    BenchError,
    Watchdog,
    check_acks,
    check_seqs,
    main,
    make_event,
    rss_mb,
)

Result = tuple[float, dict[str, Any]]


async def _connect(url: str) -> Any:
    # NATSBUS_BENCH_DIRECT_PUBLISH=0: one connection per bus (the run.py client "natsbus1").
    direct = os.environ.get("NATSBUS_BENCH_DIRECT_PUBLISH", "1") != "0"
    return await natsbus.connect(url, name="natsbus-bench-natsbus", direct_publish=direct)


async def _flush(bus: Any) -> None:
    flush = getattr(bus, "flush", None)  # not in the documented contract; use it if present
    if flush is not None:
        await flush()


async def pub_sync(args: Any) -> Result:
    bus = await _connect(args.url)
    subject = args.subject
    acks = []
    start = time.perf_counter()
    for i in range(args.n):
        acks.append(await bus.publish(subject, make_event(i)))
    seconds = time.perf_counter() - start
    await bus.close()
    check_acks(acks, args.stream, args.n)
    return seconds, {}


async def pub_many(args: Any) -> Result:
    bus = await _connect(args.url)
    subject = args.subject
    start = time.perf_counter()
    acks = await bus.publish_many([(subject, make_event(i)) for i in range(args.n)])
    seconds = time.perf_counter() - start
    await bus.close()
    check_acks(list(acks), args.stream, args.n)
    return seconds, {}


async def pub_gather(args: Any) -> Result:
    """One task per publish, a semaphore keeping ``window`` of them in flight."""
    bus = await _connect(args.url)
    subject = args.subject
    permits = asyncio.Semaphore(args.window)

    async def one(i: int) -> Any:
        async with permits:
            return await bus.publish(subject, make_event(i))

    start = time.perf_counter()
    acks = await asyncio.gather(*(one(i) for i in range(args.n)))
    seconds = time.perf_counter() - start
    await bus.close()
    check_acks(list(acks), args.stream, args.n)
    return seconds, {}


async def consume(args: Any) -> Result:
    """``async for msg in bus.consume(...)``: ``msg.data`` + ``await msg.ack()`` each."""
    bus = await _connect(args.url)
    n = args.n
    seqs: list[int] = []
    received = 0
    start = time.perf_counter()
    async with Watchdog(seqs.__len__), bus.consume(args.stream, args.consumer) as messages:
        async for msg in messages:
            if msg.data["type"] != EVENT_TYPE:
                raise BenchError(f"unexpected event {msg.payload[:80]!r}")
            seqs.append(msg.seq)
            await msg.ack()
            received += 1
            if received >= n:
                break
    await _flush(bus)
    seconds = time.perf_counter() - start
    await bus.close()
    check_seqs(seqs, n)
    return seconds, {}


async def worker(args: Any) -> Result:
    """``bus.worker(stream, durable, handle)`` with concurrency 1 and an async handler that
    reads ``msg.data`` (the worker acks on return); stopped from the handler after N."""
    bus = await _connect(args.url)
    n = args.n
    seqs: list[int] = []
    wrong: list[bytes] = []

    async def handle(msg: Any) -> None:
        if msg.data["type"] != EVENT_TYPE:
            wrong.append(msg.payload[:80])
        seqs.append(msg.seq)
        if len(seqs) >= n:
            w.stop()  # this message is still acked; the stop flushes the acks

    start = time.perf_counter()
    w = bus.worker(args.stream, args.consumer, handle, concurrency=1)
    async with Watchdog(seqs.__len__):
        await w.run()
    await _flush(bus)
    seconds = time.perf_counter() - start
    await bus.close()
    if wrong:
        raise BenchError(f"unexpected event {wrong[0]!r}")
    if w.handled != n or w.failed or w.rejected:
        raise BenchError(f"worker handled {w.handled}, failed {w.failed}, rejected {w.rejected}")
    check_seqs(seqs, n)
    return seconds, {}


async def replay(args: Any) -> Result:
    """``async for msg in bus.replay(stream)``: ``msg.data`` each, no acks; the replay ends
    by itself at the last message."""
    bus = await _connect(args.url)
    n = args.n
    seqs: list[int] = []
    start = time.perf_counter()
    async with Watchdog(seqs.__len__), bus.replay(args.stream) as messages:
        async for msg in messages:
            if msg.data["type"] != EVENT_TYPE:
                raise BenchError(f"unexpected event {msg.payload[:80]!r}")
            seqs.append(msg.seq)
    seconds = time.perf_counter() - start
    await bus.close()
    check_seqs(seqs, n)
    return seconds, {}


async def batches(args: Any) -> Result:
    """``bus.consume(...).batches(max_messages=batch)``: ``msg.data`` + ack for each."""
    bus = await _connect(args.url)
    n = args.n
    seqs: list[int] = []
    received = 0
    start = time.perf_counter()
    async with Watchdog(seqs.__len__), bus.consume(args.stream, args.consumer) as messages:
        chunks = messages.batches(max_messages=args.batch, timeout=1.0)
        try:
            async for chunk in chunks:
                for msg in chunk:
                    if msg.data["type"] != EVENT_TYPE:
                        raise BenchError(f"unexpected event {msg.payload[:80]!r}")
                    seqs.append(msg.seq)
                    await msg.ack()
                received += len(chunk)
                if received >= n:
                    break
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
    await _flush(bus)
    seconds = time.perf_counter() - start
    await bus.close()
    check_seqs(seqs, n)
    return seconds, {}


async def memory(args: Any) -> Result:
    """RSS while consuming and acking ``n`` messages (sampled every 1,000 messages).

    Sequences are checked against a bitmap allocated before the first RSS sample, so the
    check itself does not grow the process.
    """
    n = args.n
    seen = bytearray(n + 1)
    bus = await _connect(args.url)
    received = 0
    every = 1000

    def progress() -> int:
        return received

    async with Watchdog(progress), bus.consume(args.stream, args.consumer) as messages:
        rss_start = rss_mb()
        peak = rss_start
        start = time.perf_counter()
        async for msg in messages:
            if msg.data["type"] != EVENT_TYPE:
                raise BenchError(f"unexpected event {msg.payload[:80]!r}")
            seq = msg.seq
            if not 1 <= seq <= n or seen[seq]:
                raise BenchError(f"stream sequence {seq} out of range or received twice")
            seen[seq] = 1
            await msg.ack()
            received += 1
            if received % every == 0:
                rss = rss_mb()
                if rss > peak:
                    peak = rss
            if received >= n:
                break
    await _flush(bus)
    seconds = time.perf_counter() - start
    rss_end = rss_mb()
    peak = max(peak, rss_end)
    await bus.close()
    if received != n or seen.count(1) != n:
        raise BenchError(f"received {received} messages ({seen.count(1)} distinct), expected {n}")
    return seconds, {
        "rss_start_mb": round(rss_start, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_mb": round(peak - rss_start, 1),
    }


WORKLOADS = {
    "pub_sync": pub_sync,
    "pub_many": pub_many,
    "pub_gather": pub_gather,
    "consume": consume,
    "batches": batches,
    "worker": worker,
    "replay": replay,
    "memory": memory,
}

if __name__ == "__main__":
    sys.exit(main("natsbus", WORKLOADS))
