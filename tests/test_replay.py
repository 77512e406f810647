"""Ordered replay and stored messages: every message from the start point
exactly once and in order, nothing left on the server, across restarts."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import StreamFactory

import natsbus
from natsbus.testing import NatsServer


@dataclasses.dataclass
class Event:
    i: int


async def consumers_of(bus: natsbus.Bus, stream: str) -> list[str]:
    listed = await bus.jetstream_api(f"CONSUMER.NAMES.{stream}")
    return list(listed.get("consumers") or [])


async def test_replay_from_the_start_ends_at_the_last_message(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream()
    await bus.publish_many([(f"{p}.e", {"i": i}) for i in range(50)])
    async with bus.replay(stream, model=Event) as r:
        got = [(m.seq, m.data) async for m in r]
    assert got == [(i + 1, Event(i)) for i in range(50)]
    assert await consumers_of(bus, stream) == [], "no consumer left behind"


async def test_replay_ends_at_the_last_message_at_its_start(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream()
    await bus.publish_many([(f"{p}.e", {"i": i}) for i in range(5)])
    async with bus.replay(stream) as r:
        first = await r.__anext__()
        await bus.publish(f"{p}.e", {"i": 5})  # after the start: not replayed
        rest = [m.seq async for m in r]
    assert [first.seq, *rest] == [1, 2, 3, 4, 5]


async def test_replay_of_an_empty_stream_ends_at_once(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, _ = await make_stream()
    async with bus.replay(stream) as r:
        assert [m async for m in r] == []


async def test_replay_start_points_and_filters(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream()
    await bus.publish_many([(f"{p}.{'ab'[i % 2]}", {"i": i}) for i in range(10)])
    await asyncio.sleep(0.05)
    cut = datetime.datetime.now(datetime.timezone.utc)
    await asyncio.sleep(0.05)
    await bus.publish_many([(f"{p}.c", {"i": i}) for i in range(10, 13)])

    async def seqs(**kw: object) -> list[int]:
        async with bus.replay(stream, **kw) as r:  # type: ignore[arg-type]
            return [m.seq async for m in r]

    assert await seqs(start_seq=11) == [11, 12, 13]
    assert await seqs(start_seq=100) == []
    assert await seqs(start_time=cut) == [11, 12, 13]
    assert await seqs(start_time=cut.isoformat().replace("+00:00", "Z")) == [11, 12, 13]
    plus_two = cut.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    assert await seqs(start_time=plus_two) == [11, 12, 13]
    assert await seqs(subjects=f"{p}.a") == [1, 3, 5, 7, 9]
    assert await seqs(subjects=[f"{p}.b", f"{p}.c"]) == [2, 4, 6, 8, 10, 11, 12, 13]
    assert await seqs(last_per_subject=True) == [9, 10, 13]
    assert await seqs(last_per_subject=True, subjects=f"{p}.a") == [9]
    assert await consumers_of(bus, stream) == []


async def test_follow_goes_on_with_new_messages(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream()
    await bus.publish_many([(f"{p}.e", {"i": i}) for i in range(3)])
    got: list[int] = []
    async with bus.replay(stream, follow=True) as r:
        async for m in r:
            got.append(m.data["i"])
            if m.data["i"] == 2:
                await bus.publish(f"{p}.e", {"i": 3})
            if m.data["i"] == 3:
                break
        assert await r.next(timeout=0.3) is None
    assert got == [0, 1, 2, 3]
    assert await consumers_of(bus, stream) == []


async def test_replay_bad_arguments(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, _ = await make_stream()
    with pytest.raises(natsbus.InvalidArgumentError, match="at least 1"):
        bus.replay(stream, start_seq=0)
    with pytest.raises(natsbus.InvalidArgumentError, match="ISO-8601"):
        bus.replay(stream, start_time="yesterday")
    with pytest.raises(natsbus.InvalidArgumentError, match="datetime or ISO-8601"):
        bus.replay(stream, start_time=12)  # type: ignore[arg-type]
    with pytest.raises(natsbus.InvalidArgumentError, match="at most one of"):
        await bus.replay(stream, start_seq=3, last_per_subject=True).start()
    with pytest.raises(natsbus.InvalidArgumentError, match="subjects"):
        await bus.replay(stream, subjects=["a..b"]).start()
    with pytest.raises(natsbus.StreamNotFoundError, match="NOPE_REPLAY"):
        await bus.replay("NOPE_REPLAY").start()


async def test_replay_messages_take_no_acks(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream()
    await bus.publish(f"{p}.e", {"i": 1})
    async with bus.replay(stream) as r:
        msg = await r.__anext__()
        with pytest.raises(natsbus.InvalidArgumentError, match="replay"):
            await msg.ack()


async def test_replay_across_a_server_restart_loses_and_repeats_nothing(
    fresh_server: NatsServer,
) -> None:
    async with natsbus.connect(fresh_server.url) as bus:
        await bus.jetstream_api(
            "STREAM.CREATE.LOG", {"name": "LOG", "subjects": ["log.>"], "storage": "file"}
        )
        # More than the replay buffers (it holds back the server's flow
        # control past ~1,000 messages), so the restart comes mid-stream.
        pad = "x" * 1000
        await bus.publish_many([("log.x", {"i": i, "pad": pad}) for i in range(5000)])
        got: list[int] = []
        async with bus.replay("LOG", follow=True) as r:
            async for m in r:
                got.append(m.seq)
                if m.seq == 100:
                    fresh_server.restart()
                    for _attempt in range(100):
                        try:
                            await bus.publish_many([("log.x", {"i": i}) for i in range(5000, 5050)])
                            break
                        except natsbus.NatsbusError:
                            await asyncio.sleep(0.1)
                    else:
                        pytest.fail("JetStream did not come back after the restart")
                if m.seq == 5050:
                    break
        assert got == list(range(1, 5051)), "in order, none lost, none repeated"


async def test_get_message(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream()
    await bus.publish(f"{p}.a", {"i": 1}, headers={"Trace": ["t1", "t2"]})
    await bus.publish(f"{p}.b", b"\x00raw")
    await bus.publish(f"{p}.a", {"i": 3})
    m = await bus.get_message(stream, seq=1, model=Event)
    assert (m.subject, m.seq, m.stream, m.data) == (f"{p}.a", 1, stream, Event(1))
    assert m.headers_all["Trace"] == ["t1", "t2"]
    assert m.timestamp is not None
    age = datetime.datetime.now().timestamp() - m.timestamp
    assert 0 <= age < 60
    assert (await bus.get_message(stream, 2)).payload == b"\x00raw"
    assert (await bus.get_message(stream, last_for_subject=f"{p}.a")).seq == 3
    assert (await bus.get_message(stream)).seq == 3
    with pytest.raises(natsbus.MessageNotFoundError, match="no message at sequence 9"):
        await bus.get_message(stream, seq=9)
    with pytest.raises(natsbus.MessageNotFoundError, match="for subject"):
        await bus.get_message(stream, last_for_subject=f"{p}.zzz")
    with pytest.raises(natsbus.StreamNotFoundError):
        await bus.get_message("NOPE_GET", seq=1)
    with pytest.raises(natsbus.InvalidArgumentError, match="not both"):
        await bus.get_message(stream, seq=1, last_for_subject=f"{p}.a")
    with pytest.raises(natsbus.InvalidArgumentError, match="seq"):
        await bus.get_message(stream, seq=0)
    with pytest.raises(natsbus.InvalidArgumentError, match="take no acknowledgement"):
        await m.ack()


def test_the_readme_replay_example_runs(nats_url: str, tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("\n## Replay and stored messages\n", 1)[1]
    script = tmp_path / "replay_example.py"
    script.write_text(section.split("```python\n", 1)[1].split("```", 1)[0])
    out = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "NATS_URL": nats_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "replayed 15 to 30",
        "a1 events in the last hour: 10",
        "latest per agent: {'agent.a0.started': 27, 'agent.a1.started': 28, "
        "'agent.a2.started': 29}",
        "15 {'run': 14} 28 True",
        'stream "AGENT_EVENTS" holds no message at sequence 10000',
    ]


async def test_a_replay_whose_consumer_vanishes_recreates_it_and_loses_nothing(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream()
    await bus.publish_many([(f"{p}.e", {"i": i}) for i in range(10)])
    got: list[int] = []
    async with bus.replay(stream, follow=True, heartbeat=0.2) as r:
        async for m in r:
            got.append(m.seq)
            if m.seq == 10:
                # The server loses the replay's consumer (as a restarted
                # server without its state would); new messages come meanwhile.
                (name,) = await consumers_of(bus, stream)
                await bus.jetstream_api(f"CONSUMER.DELETE.{stream}.{name}")
                await bus.publish_many([(f"{p}.e", {"i": i}) for i in range(10, 15)])
            if m.seq == 15:
                break
    assert got == list(range(1, 16))
    assert await consumers_of(bus, stream) == []
