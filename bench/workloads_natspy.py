"""nats-py side of the natsbus benchmark: one workload per process, one JSON line on stdout.

    python bench/workloads_natspy.py <workload> --url URL --n N [--window 1024] [--batch 500]

Written the way a nats-py 2.16 user would: ``json.dumps(...).encode()`` per publish,
``js.publish`` / ``js.publish_async``, ``pull_subscribe`` + ``fetch`` + ``json.loads`` +
``await msg.ack()`` per message. The stream and consumer are created by ``bench/run.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import nats
from nats.aio.msg import Msg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    EVENT_TYPE,
    HEADERS,
    BenchError,
    Watchdog,
    check_acks,
    check_seqs,
    main,
    make_event,
)

Result = tuple[float, dict[str, Any]]
_COMPACT = (",", ":")


async def _connect(url: str) -> nats.NATS:
    return await nats.connect(url, name="natsbus-bench-natspy")


async def pub_sync(args: Any) -> Result:
    nc = await _connect(args.url)
    js = nc.jetstream()
    subject, dumps = args.subject, json.dumps
    acks = []
    start = time.perf_counter()
    for i in range(args.n):
        acks.append(
            await js.publish(
                subject, dumps(make_event(i), separators=_COMPACT).encode(), headers=HEADERS
            )
        )
    seconds = time.perf_counter() - start
    await nc.close()
    check_acks(acks, args.stream, args.n)
    return seconds, {}


async def pub_many(args: Any) -> Result:
    """``publish_async`` (nats-py's pipelined publish) with a pending window, then gather."""
    nc = await _connect(args.url)
    js = nc.jetstream(publish_async_max_pending=args.window)
    subject, dumps = args.subject, json.dumps
    start = time.perf_counter()
    futures = []
    for i in range(args.n):
        payload = dumps(make_event(i), separators=_COMPACT).encode()
        futures.append(await js.publish_async(subject, payload, headers=HEADERS))
    acks = await asyncio.gather(*futures)
    seconds = time.perf_counter() - start
    await nc.close()
    check_acks(list(acks), args.stream, args.n)
    return seconds, {}


async def pub_gather(args: Any) -> Result:
    """One task per publish, a semaphore keeping ``window`` of them in flight."""
    nc = await _connect(args.url)
    js = nc.jetstream()
    subject, dumps = args.subject, json.dumps
    permits = asyncio.Semaphore(args.window)

    async def one(i: int) -> Any:
        async with permits:
            return await js.publish(
                subject, dumps(make_event(i), separators=_COMPACT).encode(), headers=HEADERS
            )

    start = time.perf_counter()
    acks = await asyncio.gather(*(one(i) for i in range(args.n)))
    seconds = time.perf_counter() - start
    await nc.close()
    check_acks(list(acks), args.stream, args.n)
    return seconds, {}


async def replay(args: Any) -> Result:
    """An ordered consumer (``js.subscribe(..., ordered_consumer=True)``) over the stream:
    ``json.loads`` each, no acks, until the N preloaded messages are in."""
    nc = await _connect(args.url)
    js = nc.jetstream()
    n, loads = args.n, json.loads
    replies: list[str] = []
    start = time.perf_counter()
    sub = await js.subscribe(args.subject, stream=args.stream, ordered_consumer=True)
    async with Watchdog(replies.__len__):
        async for msg in sub.messages:
            if loads(msg.data)["type"] != EVENT_TYPE:
                raise BenchError(f"unexpected event {msg.data[:80]!r}")
            replies.append(msg.reply)
            if len(replies) >= n:
                break
    seconds = time.perf_counter() - start
    await sub.unsubscribe()
    await nc.close()
    metas = [Msg.Metadata._from_reply(r) for r in replies]
    check_seqs((m.sequence.stream for m in metas), n)
    return seconds, {}


async def consume(args: Any) -> Result:
    """``fetch(batch)`` + ``json.loads`` + ``await msg.ack()`` each (nats-py has no iterator
    over a pull consumer, so this is also its batch shape: ``batches`` runs the same code)."""
    nc = await _connect(args.url)
    js = nc.jetstream()
    n, batch, loads = args.n, args.batch, json.loads
    replies: list[str] = []
    received = 0
    start = time.perf_counter()
    psub = await js.pull_subscribe_bind(durable=args.consumer, stream=args.stream)
    async with Watchdog(replies.__len__):
        while received < n:
            try:
                msgs = await psub.fetch(min(batch, n - received), timeout=5)
            except nats.errors.TimeoutError:
                continue  # nothing within 5 s; the watchdog decides when that is a failure
            for msg in msgs:
                if loads(msg.data)["type"] != EVENT_TYPE:
                    raise BenchError(f"unexpected event {msg.data[:80]!r}")
                replies.append(msg.reply)
                await msg.ack()
            received += len(msgs)
    await nc.flush()
    seconds = time.perf_counter() - start
    await nc.close()
    # Stream sequences come from the ack reply subjects; parsed after the clock stopped.
    metas = [Msg.Metadata._from_reply(r) for r in replies]
    foreign = {m.stream for m in metas} - {args.stream}
    if foreign:
        raise BenchError(f"messages from other streams: {sorted(foreign)}")
    check_seqs((m.sequence.stream for m in metas), n)
    return seconds, {}


WORKLOADS = {
    "pub_sync": pub_sync,
    "pub_many": pub_many,
    "pub_gather": pub_gather,
    "consume": consume,
    "batches": consume,
    "replay": replay,
}

if __name__ == "__main__":
    sys.exit(main("natspy", WORKLOADS))
