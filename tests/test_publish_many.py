"""Pipelined publish_many: order, acks, partial failure."""

from __future__ import annotations

import json

import pytest
from conftest import StreamFactory, message_count, stored

import natsbus


async def test_acks_and_storage_follow_input_order(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream()
    items = [(f"{p}.m{i % 3}", {"i": i}) for i in range(3000)]
    acks = await bus.publish_many(items, window=64)
    assert [a.seq for a in acks] == list(range(1, 3001))
    assert all(a.stream == stream and not a.duplicate for a in acks)
    assert await message_count(bus, stream) == 3000
    for seq in (1, 1500, 3000):
        subject, data, headers = await stored(bus, stream, seq)
        assert json.loads(data) == {"i": seq - 1}
        assert subject == f"{p}.m{(seq - 1) % 3}"
        assert headers["Content-Type"] == "application/json"


async def test_headers_per_item_and_generators(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream()
    acks = await bus.publish_many(
        (f"{p}.x", b"raw", {"Nats-Msg-Id": f"id-{i % 2}"}) for i in range(4)
    )
    assert [a.duplicate for a in acks] == [False, False, True, True]
    assert await message_count(bus, stream) == 2


async def test_partial_failure_reports_each_item(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream()
    items = [
        (f"{p}.ok", {"n": 0}),
        ("no.stream.here", {"n": 1}),
        (f"{p}.ok", {"n": 2}),
        ("no.stream.either", {"n": 3}),
    ]
    with pytest.raises(natsbus.BatchPublishError) as err:
        await bus.publish_many(items)
    e = err.value
    assert "2 of 4 publishes failed" in str(e)
    assert [a.seq if a else None for a in e.acks] == [1, None, 2, None]
    assert e.errors is not None
    assert sorted(e.errors) == [1, 3]
    assert all(isinstance(x, natsbus.NoStreamError) for x in e.errors.values())
    assert await message_count(bus, stream) == 2


async def test_unencodable_items_fail_alone(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream()
    items = [
        (f"{p}.a", {"ok": 1}),
        (f"{p}.a", {"bad": float("inf")}),
        ("just-a-subject",),
        (f"{p}.a", {"ok": 2}),
    ]
    with pytest.raises(natsbus.BatchPublishError) as err:
        await bus.publish_many(items)  # type: ignore[arg-type]
    e = err.value
    assert [a.seq if a else None for a in e.acks] == [1, None, None, 2]
    assert e.errors is not None and sorted(e.errors) == [1, 2]
    assert isinstance(e.errors[1], natsbus.EncodeError)
    assert "item 1" in str(e.errors[1]) and "payload['bad']" in str(e.errors[1])
    assert isinstance(e.errors[2], natsbus.InvalidArgumentError)
    assert await message_count(bus, stream) == 2


async def test_a_raising_iterator_raises(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    _, p = await make_stream()

    def items():  # type: ignore[no-untyped-def]
        yield (f"{p}.a", {"n": 1})
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        await bus.publish_many(items())


async def test_large_batches_stream_in_chunks(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream()
    n = 10_000
    acks = await bus.publish_many(((f"{p}.x", {"i": i}) for i in range(n)), window=100)
    assert [a.seq for a in acks] == list(range(1, n + 1))
    assert await message_count(bus, stream) == n
    _, data, _ = await stored(bus, stream, n)
    assert json.loads(data) == {"i": n - 1}


async def test_empty_and_window_validation(bus: natsbus.Bus) -> None:
    assert await bus.publish_many([]) == []
    with pytest.raises(natsbus.InvalidArgumentError):
        await bus.publish_many([("a.b", b"x")], window=0)
