"""Durable pull consumption: iteration, settling, redelivery, sharing, restarts."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pydantic
import pytest
from conftest import StreamFactory, consumer_state, unique

import natsbus
from natsbus.testing import NatsServer


class Task(pydantic.BaseModel):
    id: int
    name: str


@dataclasses.dataclass
class TaskDC:
    id: int
    name: str


async def test_message_fields_and_ack(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream("worker")
    await bus.publish(f"{p}.created", {"id": 7}, headers={"Trace": "t1"})
    async with bus.consume(stream, "worker") as c:
        msg = await c.next(timeout=5)
        assert msg is not None
        assert msg.subject == f"{p}.created"
        assert msg.payload == b'{"id":7}'
        assert msg.data == {"id": 7}
        assert msg.data is msg.data  # decoded once, cached
        assert msg.headers["Trace"] == "t1"
        assert msg.headers["Content-Type"] == "application/json"
        assert (msg.stream, msg.consumer, msg.seq, msg.delivered) == (stream, "worker", 1, 1)
        assert msg.pending == 0
        assert msg.timestamp and abs(msg.timestamp - time.time()) < 60
        assert "seq=1" in repr(msg)
        await msg.ack()
        with pytest.raises(natsbus.InvalidArgumentError, match="already acknowledged"):
            await msg.ack()
    state = await consumer_state(bus, stream, "worker")
    assert state == {"pending": 0, "ack_pending": 0, "redelivered": 0}


async def test_nak_redelivers_with_delivered_2(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream("w")
    await bus.publish(f"{p}.a", {"n": 1})
    async with bus.consume(stream, "w") as c:
        first = await c.next(timeout=5)
        assert first is not None and first.delivered == 1
        await first.nak()
        again = await c.next(timeout=5)
        assert again is not None
        assert (again.seq, again.delivered) == (first.seq, 2)
        await again.ack()


async def test_nak_with_delay_waits(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream("w")
    await bus.publish(f"{p}.a", {"n": 1})
    async with bus.consume(stream, "w") as c:
        first = await c.next(timeout=5)
        assert first is not None
        t0 = time.monotonic()
        await first.nak(delay=1.0)
        assert await c.next(timeout=0.5) is None
        again = await c.next(timeout=5)
        assert again is not None and again.delivered == 2
        assert time.monotonic() - t0 >= 0.9
        await again.ack()


async def test_term_never_comes_back(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream("w", consumer_config={"ack_wait": 500_000_000})
    await bus.publish(f"{p}.poison", {"bad": True})
    await bus.publish(f"{p}.fine", {"bad": False})
    async with bus.consume(stream, "w") as c:
        poison = await c.next(timeout=5)
        assert poison is not None and poison.data == {"bad": True}
        await poison.term(reason="cannot parse")
        fine = await c.next(timeout=5)
        assert fine is not None and fine.data == {"bad": False}
        await fine.ack()
        # Well past ack_wait: nothing is redelivered.
        assert await c.next(timeout=1.5) is None
    assert await consumer_state(bus, stream, "w") == {
        "pending": 0,
        "ack_pending": 0,
        "redelivered": 0,
    }


async def test_unacked_message_returns_after_ack_wait(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream("w", consumer_config={"ack_wait": 1_000_000_000})
    await bus.publish(f"{p}.a", {"n": 1})
    async with bus.consume(stream, "w") as c:
        first = await c.next(timeout=5)
        assert first is not None and first.delivered == 1
        t0 = time.monotonic()
        again = await c.next(timeout=5)
        assert again is not None
        assert (again.seq, again.delivered) == (first.seq, 2)
        assert time.monotonic() - t0 >= 0.8
        await again.ack()


async def test_in_progress_holds_the_message(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream("w", consumer_config={"ack_wait": 1_000_000_000})
    await bus.publish(f"{p}.a", {"n": 1})
    async with bus.consume(stream, "w") as c:
        msg = await c.next(timeout=5)
        assert msg is not None
        for _ in range(5):  # 2.5s of work, ack_wait is 1s
            await asyncio.sleep(0.5)
            await msg.in_progress()
        await msg.ack()
        assert await c.next(timeout=1.5) is None
    assert (await consumer_state(bus, stream, "w"))["redelivered"] == 0


async def test_ack_sync_is_confirmed(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream("w")
    await bus.publish(f"{p}.a", {"n": 1})
    async with bus.consume(stream, "w") as c:
        msg = await c.next(timeout=5)
        assert msg is not None
        await msg.ack_sync()
        # Confirmed by the server: no flush needed to see it.
        assert (await consumer_state(bus, stream, "w"))["ack_pending"] == 0


async def test_two_buses_share_one_durable(
    nats_url: str, bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream("shared")
    total = 2000
    await bus.publish_many([(f"{p}.job", {"i": i}) for i in range(total)])
    seen: list[list[int]] = [[], []]
    done = asyncio.Event()

    async def worker(k: int) -> None:
        async with natsbus.connect(nats_url) as b, b.consume(stream, "shared", batch=50) as c:
            while not done.is_set():
                msg = await c.next(timeout=0.2)
                if msg is None:
                    continue
                seen[k].append(msg.data["i"])
                await msg.ack()
                if len(seen[0]) + len(seen[1]) >= total:
                    done.set()

    await asyncio.wait_for(asyncio.gather(worker(0), worker(1)), timeout=30)
    everything = seen[0] + seen[1]
    assert sorted(everything) == list(range(total))  # none lost, none twice
    assert seen[0] and seen[1]  # both did work
    state = await consumer_state(bus, stream, "shared")
    assert state["pending"] == 0 and state["ack_pending"] == 0


async def test_iteration_survives_server_restart(fresh_server: NatsServer) -> None:
    async with natsbus.connect(fresh_server.url) as bus:
        await bus.jetstream_api(
            "STREAM.CREATE.DURABLE", {"name": "DURABLE", "subjects": ["d.>"], "storage": "file"}
        )
        await bus.jetstream_api(
            "CONSUMER.CREATE.DURABLE.w",
            {
                "stream_name": "DURABLE",
                # A message on the wire when the server goes down is lost on
                # the way and comes back after ack_wait: keep that short.
                "config": {"durable_name": "w", "ack_policy": "explicit", "ack_wait": 2 * 10**9},
            },
        )
        await bus.publish_many([("d.x", {"i": i}) for i in range(100)])
        got: list[int] = []
        async with bus.consume("DURABLE", "w", batch=10) as c:
            async for msg in c:
                got.append(msg.data["i"])
                if len(got) < 50:
                    await msg.ack()
                else:
                    await msg.ack_sync()
                    break
            await c.close()
        assert got == list(range(50))

        c = bus.consume("DURABLE", "w", batch=10)
        await c.start()
        fresh_server.restart()
        # Publish once JetStream is back (the client reconnects by itself).
        for _attempt in range(100):
            try:
                await bus.publish_many([("d.x", {"i": i}) for i in range(100, 150)])
                break
            except natsbus.NatsbusError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("JetStream did not come back after the restart")
        rest: list[int] = []
        async with c:
            async for msg in c:
                rest.append(msg.data["i"])
                await msg.ack()
                if len(set(rest)) >= 100:
                    break
        # Acked progress survived: nothing before 50 comes back.
        assert sorted(set(rest)) == list(range(50, 150))


async def test_missing_stream_and_consumer_are_named(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    missing = unique("NOPE")
    with pytest.raises(natsbus.StreamNotFoundError) as err:
        async with bus.consume(missing, "w"):
            pass
    assert missing in str(err.value)
    assert err.value.err_code == 10059
    stream, _ = await make_stream()
    with pytest.raises(natsbus.ConsumerNotFoundError) as cerr:
        async for _ in bus.consume(stream, "ghost"):
            pass
    assert "ghost" in str(cerr.value) and stream in str(cerr.value)
    assert cerr.value.err_code == 10014


async def test_consumer_deleted_while_iterating(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, _ = await make_stream("w")
    async with bus.consume(stream, "w") as c:
        await bus.jetstream_api(f"CONSUMER.DELETE.{stream}.w")
        with pytest.raises(natsbus.ConsumerNotFoundError):
            await asyncio.wait_for(c.__anext__(), timeout=20)


async def test_model_decoding(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream("w")
    await bus.publish(f"{p}.t", Task(id=1, name="a"))
    await bus.publish(f"{p}.t", {"id": "not-an-int", "name": "b"})
    async with bus.consume(stream, "w", model=Task) as c:
        good = await c.next(timeout=5)
        bad = await c.next(timeout=5)
        assert good is not None and bad is not None
        assert good.data == Task(id=1, name="a")
        with pytest.raises(natsbus.DecodeError) as err:
            _ = bad.data
        e = err.value
        assert (e.subject, e.seq) == (f"{p}.t", 2)
        assert "Task" in str(e) and f"{p}.t" in str(e) and "seq 2" in str(e)
        assert bad.payload  # raw bytes still there
        await good.ack()
        await bad.term(reason="invalid task")


async def test_dataclass_model_and_plain_json_errors(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream("w", consumer_config={"ack_wait": 500_000_000})
    await bus.publish(f"{p}.t", TaskDC(2, "b"))
    await bus.publish(f"{p}.raw", b"\xffnot json")
    async with bus.consume(stream, "w", model=TaskDC) as c:
        m = await c.next(timeout=5)
        assert m is not None and m.data == TaskDC(2, "b")
        raw = await c.next(timeout=5)
        assert raw is not None
        with pytest.raises(natsbus.DecodeError, match="seq 2"):
            _ = raw.data
    async with bus.consume(stream, "w") as c2:
        # Unacked messages come back after ack_wait; without a model, data is plain JSON.
        m2 = await c2.next(timeout=5)
        assert m2 is not None and m2.data == {"id": 2, "name": "b"}
        assert m2.delivered == 2


async def test_batches(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream("w")
    await bus.publish_many([(f"{p}.e", {"i": i}) for i in range(95)])
    got: list[int] = []
    sizes: list[int] = []
    async for batch in bus.consume(stream, "w").batches(max_messages=10, timeout=0.2):
        assert 1 <= len(batch) <= 10
        sizes.append(len(batch))
        for m in batch:
            got.append(m.data["i"])
            await m.ack()
        if len(got) == 95:
            break
    assert got == list(range(95))
    assert max(sizes) == 10


async def test_fetch(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream("w")
    async with bus.consume(stream, "w") as c:
        t0 = time.monotonic()
        assert await c.fetch(5, timeout=0.3) == []
        assert 0.25 <= time.monotonic() - t0 < 2
        await bus.publish_many([(f"{p}.e", {"i": i}) for i in range(3)])
        got: list[natsbus.Message] = []
        while len(got) < 3:
            got += await c.fetch(5, timeout=2)
        assert [m.data["i"] for m in got] == [0, 1, 2]


async def test_close_releases_prefetched_messages(
    nats_url: str, bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream("w")  # ack_wait 30s
    await bus.publish_many([(f"{p}.e", {"i": i}) for i in range(20)])
    async with bus.consume(stream, "w", batch=20) as c:
        first = await c.next(timeout=5)
        assert first is not None
        await first.ack()
    # The other 19 were buffered; closing released them, so they come back
    # now rather than after ack_wait.
    async with natsbus.connect(nats_url) as other, other.consume(stream, "w") as c2:
        t0 = time.monotonic()
        rest = []
        while len(rest) < 19:
            m = await c2.next(timeout=5)
            assert m is not None
            rest.append(m.data["i"])
            await m.ack()
        assert time.monotonic() - t0 < 5
        assert sorted(rest) == list(range(1, 20))


async def test_cancelled_wait_loses_nothing(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream("w")
    async with bus.consume(stream, "w") as c:
        waiter = asyncio.ensure_future(c.__anext__())
        await asyncio.sleep(0.2)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await bus.publish(f"{p}.e", {"i": 1})
        msg = await c.next(timeout=5)
        assert msg is not None and msg.data == {"i": 1} and msg.delivered == 1
        await msg.ack()


async def test_iteration_ends_after_close(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream("w")
    await bus.publish(f"{p}.e", {"i": 1})
    c = bus.consume(stream, "w")
    async for m in c:
        await m.ack()
        await c.close()
    with pytest.raises(StopAsyncIteration):
        await c.__anext__()


async def test_closing_the_bus_under_a_waiting_iteration_raises_closed_error(
    nats_url: str, make_stream: StreamFactory
) -> None:
    stream, _ = await make_stream("w")
    b = await natsbus.connect(nats_url)
    c = b.consume(stream, "w")
    await c.start()

    async def drain() -> int:
        n = 0
        async for _ in c:
            n += 1
        return n

    task = asyncio.ensure_future(drain())
    await asyncio.sleep(0.2)
    await b.close()
    with pytest.raises(natsbus.ClosedError, match="the bus is closed"):
        await asyncio.wait_for(task, timeout=10)


async def test_closing_the_consumer_from_another_task_ends_the_iteration(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, _ = await make_stream("w")
    c = bus.consume(stream, "w")
    await c.start()

    async def drain() -> int:
        n = 0
        async for _ in c:
            n += 1
        return n

    task = asyncio.ensure_future(drain())
    await asyncio.sleep(0.2)
    await c.close()  # e.g. from a signal handler
    assert await asyncio.wait_for(task, timeout=10) == 0


async def test_a_batch_arriving_during_close_is_released(
    bus: natsbus.Bus, make_stream: StreamFactory, nats_url: str
) -> None:
    """Messages already on their way to a waiting ``__anext__`` when ``close()``
    runs are released, not left in the closed consumer's buffer until ack_wait."""
    import threading

    import nats

    stream, p = await make_stream("w", consumer_config={"ack_wait": 30_000_000_000})
    c = bus.consume(stream, "w")
    await c.start()
    waiter = asyncio.ensure_future(c.__anext__())
    await asyncio.sleep(0.2)  # the waiter now waits on the runtime

    async def publish() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for i in range(5):
            await js.publish(f"{p}.e", b'{"i": %d}' % i)
        await nc.close()

    # Publish from another thread while this loop is blocked, so the batch
    # reaches the waiter's future before the waiter runs again.
    t = threading.Thread(target=lambda: asyncio.run(publish()))
    t.start()
    t.join()
    time.sleep(0.5)
    await c.close()
    with pytest.raises(StopAsyncIteration):
        await waiter
    started = time.monotonic()
    got: list[int] = []
    async with bus.consume(stream, "w") as again:
        while len(got) < 5:
            msg = await again.next(timeout=5)
            assert msg is not None, f"only {got} came back"
            got.append(msg.data["i"])
            await msg.ack()
    assert sorted(got) == list(range(5))
    assert time.monotonic() - started < 5, "released at once, not after ack_wait"
