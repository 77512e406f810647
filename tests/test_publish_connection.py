"""publish() through the loop-driven publish connection (natspublish_conn(bus)).

Every publish result is checked against the server: the stream's contents,
sequences, headers, and the server's own per-connection counters (connz),
which show which connection carried the messages.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import StreamFactory, create_stream, message_count, stored, unique

import natsbus
from natsbus.testing import NatsCluster, NatsServer


def publish_conn(bus: natsbus.Bus) -> Any:
    """The bus's loop-driven publish connection, if one is attached."""
    return bus._core.publish_connection


def connz(server: NatsServer) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.monitor_url}/connz") as r:
        return list(json.load(r)["connections"])


def direct_conns(server: NatsServer, name: str) -> list[dict[str, Any]]:
    """The server's view of natsbus publish connections named ``name``."""
    return [c for c in connz(server) if c.get("name") == name and c.get("lang") == "natsbus"]


async def until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def test_publishes_travel_on_the_publish_connection(nats_server: NatsServer) -> None:
    name = unique("direct")
    async with natsbus.connect(nats_server.url, name=name) as bus:
        assert publish_conn(bus) is not None and publish_conn(bus).ready
        stream, prefix = await create_stream(bus)
        acks = [await bus.publish(f"{prefix}.e", {"i": i}) for i in range(200)]
        assert [a.seq for a in acks] == list(range(1, 201))
        assert {a.stream for a in acks} == {stream}
        assert await message_count(bus, stream) == 200
        # Both connections carry the name; the publish connection carried the 200.
        named = [c for c in connz(nats_server) if c.get("name") == name]
        assert len(named) == 2
        [direct] = direct_conns(nats_server, name)
        assert direct["in_msgs"] == 200
        assert publish_conn(bus).pending == 0
    await until(lambda: not direct_conns(nats_server, name))


async def test_direct_publish_false_keeps_one_connection(nats_server: NatsServer) -> None:
    name = unique("single")
    async with natsbus.connect(nats_server.url, name=name, direct_publish=False) as bus:
        assert publish_conn(bus) is None
        _, prefix = await create_stream(bus)
        ack = await bus.publish(f"{prefix}.e", {"i": 1})
        assert ack.seq == 1
        assert len([c for c in connz(nats_server) if c.get("name") == name]) == 1


async def _outcomes(bus: natsbus.Bus, stream: str, prefix: str) -> list[str]:
    """Publish the same sequence of good and bad messages; describe each result."""
    out = []
    subject = f"{prefix}.orders"

    async def attempt(call: Any) -> None:
        try:
            ack = await call()
            out.append(f"ack {ack.stream} {ack.seq} dup={ack.duplicate}")
        except natsbus.NatsbusError as e:
            out.append(f"{type(e).__name__}: {e}")

    await attempt(lambda: bus.publish(subject, {"id": 1}, headers={"X-Trace": "t1"}, msg_id="m-1"))
    await attempt(lambda: bus.publish(subject, {"id": 1}, msg_id="m-1"))
    await attempt(lambda: bus.publish(subject, b"\x00raw", expected_last_seq=1))
    await attempt(lambda: bus.publish(subject, {"id": 3}, expected_last_seq=1))
    await attempt(lambda: bus.publish(subject, {"id": 4}, expected_stream="NOT_IT"))
    await attempt(lambda: bus.publish(subject, {"id": 5}, expected_last_msg_id="m-1"))
    await attempt(lambda: bus.publish(f"nowhere.{prefix}", {"id": 6}))
    await attempt(lambda: bus.publish(subject, b"x" * (2 * 1024 * 1024)))
    # Nothing can smuggle protocol lines through headers.
    await attempt(
        lambda: bus.publish(subject, {"id": 7}, headers={"X": f"v\r\nPUB {subject} 1\r\nz"})
    )
    await attempt(lambda: bus.publish(subject, {"id": 8}, headers={"a:b": "v"}))
    await attempt(lambda: bus.publish(subject, {"id": 9}, headers={"": "v"}))
    await attempt(lambda: bus.publish(subject, {"id": 10}, msg_id="m\r\n2"))
    return out


async def test_results_match_the_main_connection(nats_url: str) -> None:
    """The same publishes give the same acks and the same errors either way."""
    results = {}
    for direct in (True, False):
        async with natsbus.connect(nats_url, direct_publish=direct) as bus:
            assert (publish_conn(bus) is not None) is direct
            stream, prefix = await create_stream(bus)
            got = await _outcomes(bus, stream, prefix)
            results[direct] = [g.replace(stream, "<S>").replace(prefix, "<p>") for g in got]
            subject, data, headers = await stored(bus, stream, 1)
            assert (subject, data) == (f"{prefix}.orders", b'{"id":1}')
            assert headers["Nats-Msg-Id"] == "m-1"
            assert headers["X-Trace"] == "t1"
            assert headers["Content-Type"] == "application/json"
            subject, data, headers = await stored(bus, stream, 2)
            assert data == b"\x00raw" and "Content-Type" not in headers
            assert await message_count(bus, stream) == 2
    direct, main = results[True], results[False]
    assert direct == main
    assert direct[0] == "ack <S> 1 dup=False"
    assert direct[1] == "ack <S> 1 dup=True"
    assert direct[2] == "ack <S> 2 dup=False"
    assert direct[3].startswith("ExpectationError") and "wrong last sequence" in direct[3]
    assert direct[4].startswith("ExpectationError")
    # The last message (seq 2) had no msg id.
    assert direct[5].startswith("ExpectationError")
    assert direct[6].startswith("NoStreamError") and "no stream captures" in direct[6]
    assert direct[7].startswith("InvalidArgumentError")
    assert all(d.startswith("InvalidArgumentError") for d in direct[8:12]), direct[8:]


async def test_concurrent_publishes_are_all_stored_once(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, prefix = await make_stream()
    acks = await asyncio.gather(*(bus.publish(f"{prefix}.e", {"i": i}) for i in range(2000)))
    assert sorted(a.seq for a in acks) == list(range(1, 2001))
    assert await message_count(bus, stream) == 2000
    assert publish_conn(bus) is not None and publish_conn(bus).pending == 0


async def test_a_publish_without_an_ack_times_out(bus: natsbus.Bus) -> None:
    # A plain subscriber that never replies: the server delivers, nobody acks.
    subject = f"{unique('noack').lower()}.x"
    sub = await bus._core.subscribe(subject)
    try:
        start = time.monotonic()
        with pytest.raises(natsbus.TimeoutError, match="timed out"):
            await bus.publish(subject, {"n": 1}, timeout=0.3)
        assert 0.25 <= time.monotonic() - start < 2.0
        assert publish_conn(bus) is not None and publish_conn(bus).pending == 0
        # A caller's own cancellation leaves nothing behind either.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(bus.publish(subject, {"n": 2}, timeout=0.2), 0.05)
        await until(
            lambda: publish_conn(bus) is not None and publish_conn(bus).pending == 0,
            3,
        )
    finally:
        await sub.close([])


async def test_in_flight_publishes_fail_when_the_connection_drops_and_it_reopens(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    subject = f"{unique('drop').lower()}.x"
    sub = await bus._core.subscribe(subject)
    try:
        first = publish_conn(bus)
        assert first is not None
        tasks = [
            asyncio.ensure_future(bus.publish(subject, {"n": i}, timeout=30)) for i in range(3)
        ]
        await until(lambda: first.pending == 3, 3)
        start = time.monotonic()
        first.close()
        for t in tasks:
            with pytest.raises(natsbus.ConnectError, match="connection lost before the ack"):
                await t
        assert time.monotonic() - start < 2.0
    finally:
        await sub.close([])
    # Meanwhile publishes use the main connection; the publish connection comes back.
    _, prefix = await make_stream()
    assert (await bus.publish(f"{prefix}.a", {"n": 1})).seq == 1
    await until(
        lambda: (
            publish_conn(bus) is not None
            and publish_conn(bus).ready
            and publish_conn(bus) is not first
        )
    )
    assert (await bus.publish(f"{prefix}.a", {"n": 2})).seq == 2


async def test_close_waits_for_publishes_in_flight(nats_server: NatsServer) -> None:
    name = unique("closing")
    bus = await natsbus.connect(nats_server.url, name=name)
    stream, prefix = await create_stream(bus, storage="file")
    tasks = [asyncio.ensure_future(bus.publish(f"{prefix}.e", {"i": i})) for i in range(300)]
    await asyncio.sleep(0)
    await bus.close()
    acks = await asyncio.gather(*tasks)
    assert sorted(a.seq for a in acks) == list(range(1, 301))
    with pytest.raises(natsbus.ClosedError):
        await bus.publish(f"{prefix}.e", {"late": True})
    await until(lambda: not [c for c in connz(nats_server) if c.get("name") == name])
    async with natsbus.connect(nats_server.url) as check:
        assert await message_count(check, stream) == 300


async def test_publishing_survives_a_server_restart(fresh_server: NatsServer) -> None:
    async with natsbus.connect(fresh_server.url) as bus:
        await bus.jetstream_api(
            "STREAM.CREATE.RESTART", {"name": "RESTART", "subjects": ["restart.>"]}
        )
        assert (await bus.publish("restart.a", {"n": 1})).seq == 1
        before = publish_conn(bus)
        fresh_server.restart()
        for _ in range(200):
            try:
                ack = await bus.publish("restart.a", {"n": 2}, timeout=1)
                break
            except (natsbus.ConnectError, natsbus.TimeoutError, natsbus.NoStreamError):
                await asyncio.sleep(0.05)
        else:
            pytest.fail("no publish succeeded after the restart")
        assert ack.seq >= 2
        await until(
            lambda: (
                publish_conn(bus) is not None
                and publish_conn(bus).ready
                and publish_conn(bus) is not before
            )
        )
        last = await bus.publish("restart.a", {"n": 3})
        assert last.seq == ack.seq + 1


PERMISSIONS = """
authorization {
  users: [
    { user: "limited", password: "limited-pw-1",
      permissions: { publish: { deny: ["secret.>"] } } },
    { user: "noinbox", password: "noinbox-pw-2",
      permissions: { subscribe: { deny: ["_INBOX.>"] } } }
  ]
}
"""


@pytest.fixture(scope="module")
def perm_server() -> Iterator[NatsServer]:
    with NatsServer(config=PERMISSIONS) as server:
        yield server


async def test_a_denied_publish_fails_at_once_as_auth_error(perm_server: NatsServer) -> None:
    async with natsbus.connect(perm_server.url, user="limited", password="limited-pw-1") as bus:
        assert publish_conn(bus) is not None and publish_conn(bus).ready
        await bus.jetstream_api(
            "STREAM.CREATE.PERM", {"name": "PERM", "subjects": ["open.>", "secret.>"]}
        )
        start = time.monotonic()
        with pytest.raises(natsbus.AuthError, match="permissions violation"):
            await bus.publish("secret.plans", {"n": 1}, timeout=5)
        assert time.monotonic() - start < 2.0
        assert (await bus.publish("open.a", {"n": 2})).seq == 1
        assert publish_conn(bus).ready and publish_conn(bus).pending == 0


async def test_a_refused_publish_connection_leaves_the_main_one(
    perm_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="natsbus"):
        async with natsbus.connect(perm_server.url, user="noinbox", password="noinbox-pw-2") as bus:
            assert publish_conn(bus) is None
            assert any("main connection only" in r.getMessage() for r in caplog.records)
            assert bus.connected


async def test_a_server_connection_limit_leaves_the_main_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with NatsServer(config="max_connections: 1\n") as server, caplog.at_level("WARNING"):
        async with natsbus.connect(server.url) as bus:
            assert publish_conn(bus) is None
            assert any("connections exceeded" in r.getMessage() for r in caplog.records)
            await bus.jetstream_api("STREAM.CREATE.LIMIT", {"name": "LIMIT", "subjects": ["l.>"]})
            assert (await bus.publish("l.a", {"n": 1})).seq == 1


async def test_lame_duck_moves_the_publish_connection_to_another_node() -> None:
    """A rolling restart: the node the bus is on enters lame duck mode; the
    publish connection leaves it at once and reopens on a node the cluster
    announced, though the bus was given only the first node's URL."""
    config = 'lame_duck_duration: "30s"\nlame_duck_grace_period: "1s"\n'
    with NatsCluster(3, config=config) as cluster:
        first = cluster.nodes[0]
        async with natsbus.connect(first.url) as bus:
            await bus.jetstream_api(
                "STREAM.CREATE.LDM", {"name": "LDM", "subjects": ["ldm.>"], "num_replicas": 3}
            )
            before = publish_conn(bus)
            assert before is not None and before.server_name == first.server_name
            assert (await bus.publish("ldm.a", {"n": 1})).seq == 1
            first.lame_duck()
            await until(
                lambda: (
                    publish_conn(bus) is not None
                    and publish_conn(bus).ready
                    and publish_conn(bus).server_name not in ("", first.server_name)
                )
            )
            seqs = []
            for i in range(50):
                try:
                    seqs.append((await bus.publish("ldm.a", {"n": i}, timeout=2)).seq)
                    if len(seqs) == 3:
                        break
                except (natsbus.TimeoutError, natsbus.NoStreamError, natsbus.JetStreamError):
                    await asyncio.sleep(0.2)  # the stream's leader may be moving
            assert len(seqs) == 3 and seqs == sorted(set(seqs)) and seqs[0] >= 2
