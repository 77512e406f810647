"""What a consumer asks the server for: bounded in bytes, and no more than the application is
about to process (every delivery counts against max_deliver and holds a max_ack_pending slot)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import create_stream

import natsbus
from natsbus.testing import NatsServer
from support.relay import ThrottledRelay

MIB = 1 << 20
# The default byte bound of consume() (README: "Consuming").
MAX_BYTES = 8 * MIB


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def slow_consumers(server: NatsServer) -> int:
    with urllib.request.urlopen(server.monitor_url + "/varz", timeout=5) as r:
        return int(json.load(r)["slow_consumers"])


@pytest.fixture(scope="module")
def big_server() -> Iterator[NatsServer]:
    """A server that takes messages of several MiB (the default max_payload is 1 MB)."""
    with NatsServer(config="max_payload: 8MB") as server:
        yield server


@pytest.mark.parametrize("link", ["loopback", "relay"])
@pytest.mark.parametrize(("count", "size"), [(120, MIB), (400, 256 * 1024)])
async def test_a_backlog_of_large_messages_drains_without_redelivery(
    big_server: NatsServer, link: str, count: int, size: int
) -> None:
    async with natsbus.connect(big_server.url, name="admin") as admin:
        stream, prefix = await create_stream(admin, "w")
        payload = b"x" * size
        await admin.publish_many([(f"{prefix}.blob", payload)] * count, window=64)
        slow_before = slow_consumers(big_server)
        with ThrottledRelay(big_server.host, big_server.port, rate=100e6) as relay:
            url = relay.url if link == "relay" else big_server.url
            async with natsbus.connect(url, direct_publish=False) as bus:
                rss0 = peak = rss_bytes()
                t0 = time.monotonic()
                got = 0
                async with bus.consume(stream, "w") as blobs:
                    async for msg in blobs:
                        assert msg.delivered == 1, f"seq {msg.seq} was delivered again"
                        assert len(msg.payload) == size
                        await msg.ack()
                        peak = max(peak, rss_bytes())
                        got += 1
                        if got == count:
                            break
                elapsed = time.monotonic() - t0
        info = await admin.consumer_info(stream, "w")
        assert info["num_redelivered"] == 0
        assert (info["num_pending"], info["num_ack_pending"]) == (0, 0)
        assert slow_consumers(big_server) == slow_before, "the server cut us off as slow"
        if link == "loopback":
            assert elapsed < 2.0, f"{count} x {size} bytes took {elapsed:.2f}s"
        else:
            # 100 MB/s: at least ~1.3 s for 120 MiB; a stall waits out ack_wait (30 s).
            assert elapsed < 10.0, f"{count} x {size} bytes took {elapsed:.2f}s through the relay"
        growth = peak - rss0
        assert growth < 2 * MAX_BYTES + 32 * MIB, f"RSS grew {growth / MIB:.0f} MiB"
        await admin.jetstream_api(f"STREAM.DELETE.{stream}")


async def test_the_byte_bound_is_tunable(big_server: NatsServer) -> None:
    async with natsbus.connect(big_server.url) as bus:
        stream, prefix = await create_stream(bus, "w")
        await bus.publish_many([(f"{prefix}.blob", b"y" * MIB)] * 10)
        async with bus.consume(stream, "w", max_bytes=2 * MIB) as c:
            # Asked for 10, but only ~2 MiB may be held at once.
            first = await c.fetch(10, timeout=2)
            assert 1 <= len(first) <= 3
            for m in first:
                await m.ack()
        with pytest.raises(natsbus.InvalidArgumentError, match="max_bytes"):
            bus.consume(stream, "w", max_bytes=0)
        await bus.jetstream_api(f"STREAM.DELETE.{stream}")


async def test_restarted_workers_strand_no_jobs(nats_url: str) -> None:
    """The route-delivery queue: max_deliver 3; three workers each handle one job and stop."""
    async with natsbus.connect(nats_url, name="admin") as admin:
        stream, prefix = await create_stream(
            admin, "route-delivery", retention="workqueue", consumer_config={"max_deliver": 3}
        )
        await admin.publish_many([(f"{prefix}.route", {"job": i}) for i in range(20)])
        handled: list[int] = []
        for _ in range(3):
            async with (
                natsbus.connect(nats_url) as bus,
                bus.consume(stream, "route-delivery") as jobs,
            ):
                async for msg in jobs:
                    await asyncio.sleep(0.01)  # deliver the route
                    handled.append(msg.data["job"])
                    await msg.ack()
                    break
        # A fresh worker handles every job that is left, exactly once.
        async with natsbus.connect(nats_url) as bus, bus.consume(stream, "route-delivery") as jobs:
            while (msg := await jobs.next(timeout=1.0)) is not None:
                handled.append(msg.data["job"])
                await msg.ack()
        assert sorted(handled) == list(range(20))
        info = await admin.stream_info(stream)
        assert info["state"]["messages"] == 0, "a work queue keeps only what is not done"


async def test_two_slow_workers_on_one_durable_share_the_jobs(nats_url: str) -> None:
    async with natsbus.connect(nats_url, name="admin") as admin:
        stream, prefix = await create_stream(admin, "w", consumer_config={"max_ack_pending": 100})
        await admin.publish_many([(f"{prefix}.job", {"job": i}) for i in range(200)])
        done: list[list[int]] = [[], []]
        finished = asyncio.Event()

        async def worker(k: int) -> None:
            async with natsbus.connect(nats_url) as bus, bus.consume(stream, "w") as jobs:
                while not finished.is_set():
                    msg = await jobs.next(timeout=0.2)
                    if msg is None:
                        continue
                    await asyncio.sleep(0.05)  # the job
                    done[k].append(msg.data["job"])
                    await msg.ack()
                    if len(done[0]) + len(done[1]) >= 200:
                        finished.set()

        await asyncio.wait_for(asyncio.gather(worker(0), worker(1)), timeout=60)
        assert sorted(done[0] + done[1]) == list(range(200))
        shares = [len(d) / 200 for d in done]
        assert all(0.35 <= s <= 0.65 for s in shares), f"shares {shares}"
