"""Closing loses nothing: acks queued before a close reach the server, naks and unhanded
messages come back at once, and a closed bus says so instead of acking into the void."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import StreamFactory, create_stream

import natsbus
from natsbus.testing import NatsServer

RUNS = 50
TOTAL = 3000
ACKED = 1500
ACK_WAIT_NS = 1_000_000_000


async def ack_floor(bus: natsbus.Bus, stream: str, durable: str) -> int:
    info = await bus.consumer_info(stream, durable)
    return int(info["ack_floor"]["stream_seq"])


async def wait_for_floor(bus: natsbus.Bus, stream: str, durable: str, want: int) -> int:
    """The consumer's ack floor once it reaches ``want`` (or what it is after 3 s)."""
    deadline = time.monotonic() + 3
    floor = await ack_floor(bus, stream, durable)
    while floor < want and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        floor = await ack_floor(bus, stream, durable)
    return floor


async def make_backlog(admin: natsbus.Bus, n: int) -> list[str]:
    """``n`` streams of TOTAL messages, each with durable ``w`` (ack_wait 1 s)."""
    streams = []
    for _ in range(n):
        stream, prefix = await create_stream(admin, "w", consumer_config={"ack_wait": ACK_WAIT_NS})
        await admin.publish_many([(f"{prefix}.job", {"i": i}) for i in range(TOTAL)])
        streams.append(stream)
    return streams


async def redelivered_acked(admin: natsbus.Bus, streams: dict[str, set[int]]) -> dict[str, int]:
    """After ack_wait: per stream, how many acked sequences a fresh worker is given again."""
    await asyncio.sleep(ACK_WAIT_NS / 1e9 + 0.5)
    again: dict[str, int] = {}
    for stream, acked in streams.items():
        async with admin.consume(stream, "w") as c:
            got = await c.fetch(TOTAL, timeout=0.3)
            again[stream] = sum(1 for m in got if m.seq in acked)
            for m in got:
                await m.nak()
    return {s: n for s, n in again.items() if n}


async def test_acks_before_break_and_close_all_reach_the_server(nats_url: str) -> None:
    """The README's nesting: ack 1,500 of 3,000, break, leave both context managers at once."""
    async with natsbus.connect(nats_url, name="admin") as admin:
        streams = await make_backlog(admin, RUNS)
        acked: dict[str, set[int]] = {}
        short: dict[str, int] = {}
        for stream in streams:
            seen: set[int] = set()
            async with natsbus.connect(nats_url) as bus, bus.consume(stream, "w") as msgs:
                async for msg in msgs:
                    await msg.ack()
                    seen.add(msg.seq)
                    if len(seen) >= ACKED:
                        break
            acked[stream] = seen
            assert seen == set(range(1, ACKED + 1))
            floor = await wait_for_floor(admin, stream, "w", ACKED)
            if floor < ACKED:
                short[stream] = floor
        assert short == {}, f"acks lost on close (stream: ack floor): {short}"
        assert await redelivered_acked(admin, acked) == {}


async def test_acks_before_cancelling_the_consuming_task_all_reach_the_server(
    nats_url: str,
) -> None:
    """The usual SIGTERM shutdown: the task running the loop is cancelled."""
    async with natsbus.connect(nats_url, name="admin") as admin:
        streams = await make_backlog(admin, RUNS)
        acked: dict[str, set[int]] = {}
        short: dict[str, int] = {}
        for stream in streams:
            seen: set[int] = set()
            enough = asyncio.Event()

            async def work(
                stream: str = stream, seen: set[int] = seen, enough: asyncio.Event = enough
            ) -> None:
                async with natsbus.connect(nats_url) as bus, bus.consume(stream, "w") as msgs:
                    async for msg in msgs:
                        await msg.ack()
                        seen.add(msg.seq)
                        if len(seen) >= ACKED:
                            enough.set()

            task = asyncio.ensure_future(work())
            await asyncio.wait_for(enough.wait(), timeout=30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            acked[stream] = seen
            want = max(seen)
            assert seen == set(range(1, want + 1))
            floor = await wait_for_floor(admin, stream, "w", want)
            if floor < want:
                short[stream] = floor
        assert short == {}, f"acks lost on cancellation (stream: ack floor): {short}"
        assert await redelivered_acked(admin, acked) == {}


async def test_naks_just_before_a_close_come_back_at_once(nats_url: str) -> None:
    """A nak takes effect as promptly as the release of an unhanded message (ack_wait is 30 s)."""
    async with natsbus.connect(nats_url, name="admin") as admin:
        stream, prefix = await create_stream(admin, "w")  # ack_wait 30s
        await admin.publish_many([(f"{prefix}.job", {"i": i}) for i in range(40)])
        held: list[natsbus.Message] = []
        async with natsbus.connect(nats_url) as bus, bus.consume(stream, "w") as msgs:
            async for msg in msgs:
                held.append(msg)
                if len(held) == 20:
                    for m in held:
                        await m.nak()
                    break
        naked = [m.seq for m in held]
        t0 = time.monotonic()
        back: dict[int, int] = {}
        async with admin.consume(stream, "w") as c:
            while len(back) < 40 and time.monotonic() - t0 < 10:
                for m in await c.fetch(40, timeout=0.5):
                    back[m.seq] = m.delivered
                    await m.ack()
        assert sorted(back) == list(range(1, 41)), "every message comes back"
        assert time.monotonic() - t0 < 5, "without waiting out ack_wait"
        assert all(back[seq] >= 2 for seq in naked), back


async def test_closing_the_bus_closes_its_open_consumers(
    nats_url: str, make_stream: StreamFactory, bus: natsbus.Bus
) -> None:
    stream, prefix = await make_stream("w", consumer_config={"ack_wait": 20_000_000_000})
    await bus.publish_many([(f"{prefix}.job", {"i": i}) for i in range(200)])
    b = await natsbus.connect(nats_url)
    c = b.consume(stream, "w")
    handed: list[Any] = []
    async for msg in c:
        handed.append(msg)
        if len(handed) <= 100:
            await msg.ack()
        if len(handed) == 101:
            break
    unacked = handed[100]
    await b.close()  # the consumer is still open

    # Afterwards the consumer and the messages say the bus is closed.
    with pytest.raises(natsbus.ClosedError, match="the bus is closed"):
        await c.__anext__()
    with pytest.raises(natsbus.ClosedError, match="the bus is closed"):
        await unacked.ack()
    with pytest.raises(natsbus.ClosedError):
        await c.next(timeout=1)

    # The 100 acks reached the server, and what was prefetched and never
    # handed out was released: another worker gets it now, not after ack_wait.
    assert await wait_for_floor(bus, stream, "w", 100) == 100
    t0 = time.monotonic()
    rest: set[int] = set()
    async with bus.consume(stream, "w") as other:
        while len(rest) < 99 and time.monotonic() - t0 < 10:
            for m in await other.fetch(200, timeout=0.5):
                rest.add(m.seq)
                await m.ack()
    assert rest == set(range(102, 201)), "all but the one handed out and not acked"
    assert time.monotonic() - t0 < 5


async def test_closing_twice_and_concurrently_is_one_close(nats_url: str) -> None:
    b = await natsbus.connect(nats_url)
    await asyncio.gather(b.close(), b.close())
    await b.close()
    assert b.closed
    with pytest.raises(natsbus.ClosedError):
        await b.publish("x.y", b"")


def readme_block(heading: str) -> str:
    """The first ```python block under ``heading`` in the README."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readme_signal_handler_stops_a_worker_cleanly(
    fresh_server: NatsServer, tmp_path: Path
) -> None:
    """The README's shutdown example as a real process: SIGTERM mid-stream ends it with exit
    code 0, every message it handled is acked, and the rest goes to the next worker at once."""
    script = tmp_path / "worker.py"
    script.write_text(readme_block("## Shutdown"))
    async with natsbus.connect(fresh_server.url) as bus:
        await bus.jetstream_api(
            "STREAM.CREATE.ORDERS",
            {"name": "ORDERS", "subjects": ["orders.>"], "storage": "memory"},
        )
        await bus.jetstream_api(
            "CONSUMER.CREATE.ORDERS.fulfillment",
            {
                "stream_name": "ORDERS",
                "config": {"durable_name": "fulfillment", "ack_policy": "explicit"},
            },
        )
        await bus.publish_many([("orders.created", {"n": i}) for i in range(3000)])
        env = {**os.environ, "NATS_URL": fresh_server.url}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), env=env, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        handled: list[int] = []
        while len(handled) < 200:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
            assert line, "the worker stopped early"
            handled.append(int(line.split()[1]))
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
        handled += [int(line.split()[1]) for line in rest.decode().splitlines()]
        assert proc.returncode == 0
        assert handled == list(range(1, len(handled) + 1))
        assert await wait_for_floor(bus, "ORDERS", "fulfillment", len(handled)) == len(handled)
        # What the stopped worker had prefetched was released: the next worker gets it all
        # now, not after ack_wait (30 s).
        t0 = time.monotonic()
        seen: set[int] = set()
        async with bus.consume("ORDERS", "fulfillment") as c:
            while len(seen) < 3000 - len(handled) and time.monotonic() - t0 < 10:
                for m in await c.fetch(1000, timeout=0.5):
                    seen.add(m.seq)
                    await m.ack()
        assert seen == set(range(len(handled) + 1, 3001))
        assert time.monotonic() - t0 < 5
