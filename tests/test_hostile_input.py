"""Bad input gets a clear natsbus error before anything is sent, and harms nothing else."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time

import pytest
from conftest import StreamFactory, message_count

import natsbus
from natsbus import _natsbus

LONE = "orders.\ud800x"


async def test_a_subject_longer_than_a_protocol_line_is_refused_and_harms_no_other_publish(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream()
    long_subject = f"{p}." + "x" * 5000

    async def good(i: int) -> natsbus.PubAck:
        return await bus.publish(f"{p}.ok", {"i": i})

    async def bad() -> natsbus.PubAck:
        return await bus.publish(long_subject, {"bad": True})

    results = await asyncio.gather(
        *(good(i) for i in range(150)),
        bad(),
        *(good(i) for i in range(150, 300)),
        return_exceptions=True,
    )
    bad = results[150]
    assert isinstance(bad, natsbus.InvalidArgumentError)
    assert "at most 3840" in str(bad) and "5" in str(bad)
    assert all(isinstance(r, natsbus.PubAck) for i, r in enumerate(results) if i != 150)
    assert await message_count(bus, stream) == 300
    with pytest.raises(natsbus.BatchPublishError) as many:
        await bus.publish_many([(f"{p}.ok", {"i": 1}), (long_subject, {"i": 2})])
    assert isinstance(many.value.errors[1], natsbus.InvalidArgumentError)
    with pytest.raises(natsbus.InvalidArgumentError, match="at most 3840"):
        await bus.request(long_subject, b"")
    assert bus.connected


async def test_text_with_a_lone_surrogate_is_a_natsbus_error_everywhere(
    bus: natsbus.Bus,
) -> None:
    with pytest.raises(natsbus.InvalidArgumentError, match="lone surrogate"):
        await bus.publish(LONE, b"")
    with pytest.raises(natsbus.InvalidArgumentError, match="lone surrogate"):
        await bus.request(LONE, b"")
    with pytest.raises(natsbus.InvalidArgumentError, match="lone surrogate"):
        await bus.publish("orders.x", b"", headers={"X": "a\udcffb"})
    with pytest.raises(natsbus.InvalidArgumentError, match="lone surrogate"):
        await bus.publish("orders.x", b"", msg_id="id-\udcff")
    with pytest.raises(natsbus.BatchPublishError) as many:
        await bus.publish_many([(LONE, b"")])
    assert isinstance(many.value.errors[0], natsbus.InvalidArgumentError)
    with pytest.raises(natsbus.InvalidArgumentError, match="lone surrogate"):
        natsbus.Topology.from_text("streams:\n  S\ud800: {subjects: [a]}\n")
    with pytest.raises(natsbus.InvalidArgumentError, match="lone surrogate"):
        bus.consume("S\ud800", "w")


def test_out_of_range_numbers_are_refused_with_the_range() -> None:
    with pytest.raises(natsbus.TopologyError) as err:
        natsbus.Topology.from_text(
            "streams:\n  S:\n    subjects: [a]\n    max_msgs: 99999999999999999999999999999\n"
        )
    (problem,) = err.value.problems
    assert problem.field == "streams.S.max_msgs"
    assert "out of range" in problem.message and "9223372036854775807" in problem.message
    with pytest.raises(natsbus.TopologyError, match="out of range"):
        natsbus.Topology.from_dict({"streams": {"S": {"subjects": ["a"], "max_bytes": 1e30}}})
    with pytest.raises(natsbus.TopologyError, match="out of range"):
        natsbus.Topology.from_dict({"streams": {"S": {"subjects": ["a"], "max_age": 10**25}}})


def test_control_characters_in_names_are_refused_offline() -> None:
    for bad in ("S\x00X", "S\x07", "S\x1b[31m"):
        with pytest.raises(natsbus.TopologyError, match="control character"):
            natsbus.Topology.from_dict({"streams": {bad: {"subjects": ["a"]}}})
        with pytest.raises(natsbus.TopologyError, match="control character"):
            natsbus.Topology.from_dict(
                {"streams": {"S": {"subjects": ["a"], "consumers": {bad: {}}}}}
            )


def test_validation_lets_other_threads_run() -> None:
    streams = {f"S{i}": {"subjects": [f"s{i}.a", f"s{i}.b"]} for i in range(4000)}
    done = threading.Event()
    elapsed: list[float] = []

    def validate() -> None:
        t0 = time.monotonic()
        natsbus.Topology.from_dict({"streams": streams})
        elapsed.append(time.monotonic() - t0)
        done.set()

    worker = threading.Thread(target=validate)
    worker.start()
    ticks = 0
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    worker.join()
    # Each tick needs the GIL once; had validation held it, there would be ~none.
    assert ticks >= elapsed[0] * 1000 * 0.3, (ticks, elapsed[0])


def test_json_decodes_as_json_loads_does() -> None:
    for text in (
        b"12345678901234567890123",
        b"-99999999999999999999999999999999",
        b'{"big": 123456789012345678901234567890, "f": 1.5}',
        b"1e400",
        b"-1e400",
        b"[1e308, 18446744073709551616, 18446744073709551615]",
    ):
        assert _natsbus._decode(text) == json.loads(text), text
    assert _natsbus._decode(b"12345678901234567890123") == 12345678901234567890123
    assert math.isinf(_natsbus._decode(b"1e400"))
    with pytest.raises(natsbus.DecodeError):
        _natsbus._decode(b"{not json")


def test_natsbus_timeout_error_is_every_timeout_error() -> None:
    assert issubclass(natsbus.TimeoutError, asyncio.TimeoutError)
    assert issubclass(natsbus.TimeoutError, TimeoutError)
    assert issubclass(natsbus.StreamUnavailableError, asyncio.TimeoutError)


async def test_publish_from_a_thread_without_an_event_loop_raises(bus: natsbus.Bus) -> None:
    result: list[BaseException] = []

    def other_thread() -> None:
        try:
            bus.publish("orders.x", b"")
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert len(result) == 1 and isinstance(result[0], natsbus.InvalidArgumentError)
    assert "runs no event loop" in str(result[0])


async def test_cancelling_publish_many_stops_sending_and_says_what_was_stored(
    bus: natsbus.Bus, make_stream: StreamFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stream, p = await make_stream()
    task = asyncio.ensure_future(bus.publish_many([(f"{p}.x", {"i": i}) for i in range(100_000)]))
    while await message_count(bus, stream) < 1000:
        await asyncio.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="natsbus"):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 10
        while not any("publish_many was cancelled" in r.message for r in caplog.records):
            assert time.monotonic() < deadline, "no log of what was stored"
            await asyncio.sleep(0.05)
    stored = await message_count(bus, stream)
    assert stored < 100_000, "cancelling stopped the rest"
    (record,) = [r for r in caplog.records if "publish_many was cancelled" in r.message]
    assert f"{stored} of 100000 messages were stored" in record.message


def test_subjects_may_be_one_string() -> None:
    t = natsbus.Topology.from_text("streams:\n  S:\n    subjects: orders.>\n")
    assert t.to_dict()["streams"]["S"]["subjects"] == ["orders.>"]
