"""Core NATS: subscriptions (live tails, queue groups), fire-and-forget
publish, and typed requests with service errors."""

from __future__ import annotations

import asyncio
import dataclasses

import nats
import pytest
from conftest import StreamFactory, unique

import natsbus


@dataclasses.dataclass
class Reading:
    sensor: str
    value: float


async def test_live_tail_with_wildcards_and_model(bus: natsbus.Bus, nats_url: str) -> None:
    root = unique("tail")
    async with bus.subscribe(f"{root}.>", model=Reading) as sub:
        nc = await nats.connect(nats_url)
        try:
            await nc.publish(f"{root}.a.b", b'{"sensor": "t1", "value": 1.5}', headers={"K": "v"})
            await nc.publish(f"{root}.c", b'{"sensor": "t2", "value": 2}')
            await nc.flush()
        finally:
            await nc.close()
        first = await sub.next(timeout=5)
        second = await sub.next(timeout=5)
    assert first is not None and second is not None
    assert (first.subject, first.data, first.headers["K"]) == (
        f"{root}.a.b",
        Reading("t1", 1.5),
        "v",
    )
    assert (second.subject, second.data) == (f"{root}.c", Reading("t2", 2))
    with pytest.raises(natsbus.InvalidArgumentError, match="not a JetStream delivery"):
        await first.ack()


async def test_publish_core_reaches_subscribers_and_streams(
    bus: natsbus.Bus, make_stream: StreamFactory, nats_url: str
) -> None:
    stream, p = await make_stream()
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe(f"{p}.>")
        await nc.flush()
        bus.publish_core(f"{p}.note", {"n": 1}, headers={"X": "1"})
        bus.publish_core(f"{p}.note", b"raw")
        await bus.flush()
        a = await sub.next_msg(timeout=5)
        b = await sub.next_msg(timeout=5)
        assert (a.data, a.headers["X"], a.headers["Content-Type"]) == (
            b'{"n":1}',
            "1",
            "application/json",
        )
        assert b.data == b"raw", "in order, bytes untouched"
    finally:
        await nc.close()
    # A stream capturing the subject stores it, though nobody waited for an ack.
    for _ in range(50):
        info = await bus.stream_info(stream)
        if info["state"]["messages"] == 2:
            break
        await asyncio.sleep(0.05)
    assert info["state"]["messages"] == 2
    with pytest.raises(natsbus.InvalidArgumentError, match="wildcard"):
        bus.publish_core(f"{p}.*", {})


async def test_queue_group_shares_messages(bus: natsbus.Bus) -> None:
    root = unique("q")
    async with (
        bus.subscribe(f"{root}.*", queue="workers") as a,
        bus.subscribe(f"{root}.*", queue="workers") as b,
    ):
        for i in range(100):
            bus.publish_core(f"{root}.job", {"i": i})
        await bus.flush()
        seen: list[int] = []
        for sub in (a, b):
            while (msg := await sub.next(timeout=0.5)) is not None:
                seen.append(msg.data["i"])
    assert sorted(seen) == list(range(100)), "each message to one member"


async def test_subscription_ends_when_closed_from_another_task(bus: natsbus.Bus) -> None:
    sub = bus.subscribe(unique("end"))
    got: list[object] = []

    async def read() -> None:
        async for msg in sub:
            got.append(msg)

    task = asyncio.ensure_future(read())
    await asyncio.sleep(0.2)
    await sub.close()
    await asyncio.wait_for(task, 5)
    assert got == [] and sub.closed


async def test_subscribe_bad_input(bus: natsbus.Bus) -> None:
    with pytest.raises(natsbus.InvalidArgumentError, match="cannot subscribe"):
        await bus.subscribe("a..b").start()
    with pytest.raises(natsbus.InvalidArgumentError, match="queue group"):
        await bus.subscribe("a.b", queue="has space").start()
    with pytest.raises(natsbus.InvalidArgumentError, match="capacity"):
        bus.subscribe("a.b", capacity=0)


async def test_request_with_model_and_service_errors(bus: natsbus.Bus) -> None:
    subject = unique("svc")

    def answer(msg: natsbus.Message) -> dict[str, object]:
        if msg.data.get("fail"):
            raise ValueError("sensor offline")
        return {"sensor": msg.data["sensor"], "value": 20.5}

    async with await bus.serve(subject, answer):
        reply = await bus.request(subject, {"sensor": "t1"}, model=Reading)
        assert reply.data == Reading("t1", 20.5)
        with pytest.raises(natsbus.ServiceError) as caught:
            await bus.request(subject, {"fail": True, "sensor": "t1"})
    assert caught.value.code == 500
    assert "ValueError: sensor offline" in caught.value.description
    assert "sensor offline" in str(caught.value)


async def test_service_error_from_another_client(bus: natsbus.Bus, nats_url: str) -> None:
    subject = unique("micro")
    nc = await nats.connect(nats_url)
    try:

        async def handler(msg: nats.aio.msg.Msg) -> None:
            await nc.publish(
                msg.reply,
                b"",
                headers={"Nats-Service-Error": "not found", "Nats-Service-Error-Code": "404"},
            )

        await nc.subscribe(subject, cb=handler)
        await nc.flush()
        with pytest.raises(natsbus.ServiceError) as caught:
            await bus.request(subject, {})
        assert (caught.value.code, caught.value.description) == (404, "not found")
    finally:
        await nc.close()
