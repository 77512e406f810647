"""Durable push consumers read with consume(): same Message API, acks, flow
control and heartbeats answered, resuming where the last reader stopped."""

from __future__ import annotations

import asyncio

import pytest
from conftest import StreamFactory, consumer_state, unique

import natsbus

SECOND = 1_000_000_000


def push_config(deliver: str, **extra: object) -> dict[str, object]:
    return {
        "deliver_subject": deliver,
        "flow_control": True,
        "idle_heartbeat": SECOND // 2,
        **extra,
    }


async def test_push_durable_reads_acks_and_resumes(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream("logger", consumer_config=push_config(unique("deliver.")))
    await bus.publish_many([(f"{p}.e", {"i": i}) for i in range(10)])
    got: list[tuple[int, int]] = []
    async with bus.consume(stream, "logger") as c:
        async for msg in c:
            assert (msg.stream, msg.consumer) == (stream, "logger")
            got.append((msg.data["i"], msg.seq))
            await msg.ack()
            if len(got) == 4:
                break
    assert got == [(i, i + 1) for i in range(4)]
    # A new reader resumes after the acknowledged ones; nothing acked comes back.
    rest: list[int] = []
    async with bus.consume(stream, "logger") as c:
        async for msg in c:
            rest.append(msg.data["i"])
            await msg.ack()
            if len(rest) == 6:
                break
    assert rest == list(range(4, 10))
    state = await consumer_state(bus, stream, "logger")
    assert state["pending"] == 0 and state["ack_pending"] == 0


async def test_flow_control_is_answered_for_a_large_backlog(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    # 4 MB of messages: the server stops sending until its flow-control
    # requests are answered, so a reader that ignored them would stall.
    stream, p = await make_stream()
    deliver = f"deliver.{stream}"
    cfg = push_config(deliver, durable_name="bulk", ack_policy="explicit", max_ack_pending=-1)
    await bus.jetstream_api(
        f"CONSUMER.CREATE.{stream}.bulk", {"stream_name": stream, "config": cfg}
    )
    payload = b"x" * 2000
    n = 2000
    await bus.publish_many([(f"{p}.b", payload) for _ in range(n)])
    seen = 0
    async with bus.consume(stream, "bulk") as c:
        while seen < n:
            msg = await c.next(timeout=10)
            assert msg is not None, f"stalled after {seen} of {n} messages"
            assert msg.payload == payload
            await msg.ack()
            seen += 1
    await bus.flush()
    state = await consumer_state(bus, stream, "bulk")
    assert state == {"pending": 0, "ack_pending": 0, "redelivered": 0}


async def test_deliver_group_shares_messages(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream()
    cfg = push_config(
        f"deliver.{stream}", durable_name="dispatch", ack_policy="explicit", deliver_group="g"
    )
    await bus.jetstream_api(
        f"CONSUMER.CREATE.{stream}.dispatch", {"stream_name": stream, "config": cfg}
    )
    a, b = bus.consume(stream, "dispatch"), bus.consume(stream, "dispatch")
    await a.start()
    await b.start()
    await bus.publish_many([(f"{p}.n", {"i": i}) for i in range(200)])
    seen: dict[str, list[int]] = {"a": [], "b": []}

    async def drain(name: str, c: natsbus.Consumer) -> None:
        while True:
            msg = await c.next(timeout=1.0)
            if msg is None:
                return
            seen[name].append(msg.data["i"])
            await msg.ack()

    await asyncio.gather(drain("a", a), drain("b", b))
    await a.close()
    await b.close()
    assert sorted(seen["a"] + seen["b"]) == list(range(200)), "each message exactly once"
    assert seen["a"] and seen["b"], "both members of the group got a share"


async def test_second_reader_of_an_ungrouped_push_consumer_is_refused(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, _ = await make_stream("solo", consumer_config=push_config(unique("deliver.")))
    async with bus.consume(stream, "solo"):
        with pytest.raises(natsbus.InvalidArgumentError, match="deliver_group"):
            await bus.consume(stream, "solo").start()


async def test_unread_push_messages_are_released_on_close(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    cfg = push_config(unique("deliver."), ack_wait=60 * SECOND)
    stream, p = await make_stream("rel", consumer_config=cfg)
    await bus.publish_many([(f"{p}.e", {"i": i}) for i in range(20)])
    async with bus.consume(stream, "rel") as c:
        first = await c.next(timeout=5)
        assert first is not None
        await first.ack()
        # Let the server push the rest into our buffer.
        await asyncio.sleep(0.3)
    # Released on close: the next reader gets them at once, not after the
    # 60 s ack_wait.
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with bus.consume(stream, "rel") as c:
        rest = []
        while len(rest) < 19:
            msg = await c.next(timeout=5)
            assert msg is not None, f"only {rest} came back"
            rest.append(msg.data["i"])
            await msg.ack()
    assert loop.time() - started < 5
    assert sorted(rest) == list(range(1, 20))
    await bus.flush()
    state = await consumer_state(bus, stream, "rel")
    assert state["pending"] == 0 and state["ack_pending"] == 0


async def test_deleted_push_consumer_raises(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, _ = await make_stream("gone", consumer_config=push_config(unique("deliver.")))
    async with bus.consume(stream, "gone") as c:
        await bus.jetstream_api(f"CONSUMER.DELETE.{stream}.gone")
        with pytest.raises(natsbus.ConsumerNotFoundError, match="gone"):
            await asyncio.wait_for(c.next(), 10)


async def test_workers_read_push_durables(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream()
    cfg = push_config(
        unique("deliver."), durable_name="dispatch", ack_policy="explicit", deliver_group="g"
    )
    await bus.jetstream_api(
        f"CONSUMER.CREATE.{stream}.dispatch", {"stream_name": stream, "config": cfg}
    )
    await bus.publish_many([(f"{p}.n", {"i": i}) for i in range(100)])
    seen: list[int] = []

    async def handle(msg: natsbus.Message) -> None:
        if msg.data["i"] == 7 and msg.delivered == 1:
            raise RuntimeError("transient")
        seen.append(msg.data["i"])

    # Two workers share the group; a failure is retried like on a pull consumer.
    a = bus.worker(stream, "dispatch", handle, concurrency=4)
    b = bus.worker(stream, "dispatch", handle, concurrency=4)
    async with a, b:
        for _ in range(100):
            if len(seen) == 100:
                break
            await asyncio.sleep(0.1)
    assert sorted(seen) == list(range(100))
    assert a.handled + b.handled == 100 and a.failed + b.failed == 1
    await bus.flush()
    state = await consumer_state(bus, stream, "dispatch")
    assert state["pending"] == 0 and state["ack_pending"] == 0
