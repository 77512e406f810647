"""An outage is reported as an outage: while a replicated stream has no leader, publishes are
retried within their timeout instead of failing as "no stream captures the subject"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

import natsbus
from natsbus.testing import NatsCluster, NatsServer


@pytest.fixture
def cluster() -> Iterator[NatsCluster]:
    """A 3-node cluster of its own (these tests stop nodes)."""
    with NatsCluster(3) as c:
        yield c


async def make_r3(bus: natsbus.Bus, name: str) -> None:
    await bus.jetstream_api(
        f"STREAM.CREATE.{name}",
        {"name": name, "subjects": [f"{name.lower()}.>"], "num_replicas": 3, "storage": "file"},
        timeout=20,
    )


async def leader_of(bus: natsbus.Bus, stream: str) -> str:
    for _ in range(100):
        info = await bus.stream_info(stream)
        leader = (info.get("cluster") or {}).get("leader")
        if leader:
            return str(leader)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{stream} has no leader")


def node_named(cluster: NatsCluster, name: str) -> NatsServer:
    return next(n for n in cluster.nodes if n.server_name == name)


@pytest.mark.parametrize("direct_publish", [True, False])
async def test_publishes_ride_out_the_loss_of_the_stream_leader(
    cluster: NatsCluster, direct_publish: bool
) -> None:
    async with natsbus.connect(cluster.urls) as admin:
        await make_r3(admin, "OUTAGE")
        leader = await leader_of(admin, "OUTAGE")
    # The publisher is on the leader's node when it is killed; it reconnects to a survivor
    # while the stream elects a new leader, and there the election answers "no responders".
    dead = node_named(cluster, leader)
    urls = [dead.url] + [n.url for n in cluster.nodes if n is not dead]
    async with natsbus.connect(urls, direct_publish=direct_publish) as bus:
        published: list[int] = []
        errors: list[BaseException] = []
        done = asyncio.Event()

        async def publisher() -> None:
            i = 0
            while not done.is_set():
                try:
                    await bus.publish("outage.x", {"i": i}, msg_id=f"m{i}", timeout=15)
                    published.append(i)
                except natsbus.NatsbusError as e:
                    errors.append(e)
                    if isinstance(e, natsbus.NoStreamError):
                        return
                i += 1

        task = asyncio.ensure_future(publisher())
        await asyncio.sleep(0.5)
        dead.kill()
        t0 = time.monotonic()
        # Publishes go on once a new leader is elected.
        before = len(published)
        while len(published) < before + 50 and time.monotonic() - t0 < 30:
            await asyncio.sleep(0.1)
        done.set()
        await asyncio.wait_for(task, timeout=30)
        assert not [e for e in errors if isinstance(e, natsbus.NoStreamError)], errors[:3]
        assert len(published) >= before + 50
        assert await leader_of(bus, "OUTAGE") != leader
        info = await bus.stream_info("OUTAGE")
        # Every acked publish is stored once (msg ids make the retries safe).
        assert info["state"]["messages"] >= len(published)


async def test_a_stream_without_quorum_is_reported_unavailable_at_the_deadline(
    cluster: NatsCluster,
) -> None:
    async with natsbus.connect(cluster.urls) as bus:
        await make_r3(bus, "NOQUORUM")
        await bus.publish("noquorum.x", {"i": 0})
        leader = await leader_of(bus, "NOQUORUM")
        survivors = [n for n in cluster.nodes if n.server_name != leader]
        for node in cluster.nodes:
            if node is not survivors[0]:
                node.stop()
        # Reconnected to the last node, whose stream can elect no leader.
        for _ in range(50):
            t0 = time.monotonic()
            try:
                await bus.publish("noquorum.x", {"i": 1}, timeout=1.5)
            except natsbus.StreamUnavailableError as e:
                err = e
                took = time.monotonic() - t0
                break
            except (natsbus.ConnectError, natsbus.TimeoutError):
                # Lost with the connection, or sent while it reconnected and never answered.
                await asyncio.sleep(0.2)
        else:
            pytest.fail("never reported unavailable")
        assert isinstance(err, natsbus.TimeoutError) and isinstance(err, TimeoutError)
        assert not isinstance(err, natsbus.NoStreamError)
        # Without quorum the meta layer cannot say which stream captures the subject either.
        assert "no leader" in str(err)
        assert "NOQUORUM" in str(err) or "JetStream could not say" in str(err)
        assert took < 1.5 + 0.5, "reported at its own timeout, not later"
        with pytest.raises(natsbus.BatchPublishError) as many:
            await bus.publish_many([("noquorum.x", {"i": 2})], timeout=1.0)
        assert isinstance(many.value.errors[0], natsbus.StreamUnavailableError)


async def test_no_stream_is_still_reported_at_once(cluster: NatsCluster) -> None:
    async with natsbus.connect(cluster.urls) as bus:
        t0 = time.monotonic()
        with pytest.raises(natsbus.NoStreamError, match="no stream captures"):
            await bus.publish("nobody.captures.this", {"n": 1}, timeout=10)
        assert time.monotonic() - t0 < 1.0
        t0 = time.monotonic()
        with pytest.raises(natsbus.BatchPublishError) as many:
            await bus.publish_many([("nobody.captures.this", {"n": 1})], timeout=10)
        assert isinstance(many.value.errors[0], natsbus.NoStreamError)
        assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("direct_publish", [True, False])
async def test_a_lame_duck_hand_over_is_never_reported_as_no_stream(
    cluster: NatsCluster, direct_publish: bool
) -> None:
    """While the leader hands over, a publish may be answered 503 (retried) or, when the old
    leader drops it, not at all (a timeout: may or may not be stored; msg ids make the retry
    safe). It is never "no stream captures the subject", and publishing goes on."""
    async with natsbus.connect(cluster.urls) as admin:
        await make_r3(admin, "DUCK")
        leader = await leader_of(admin, "DUCK")
    survivor = next(n for n in cluster.nodes if n.server_name != leader)
    async with natsbus.connect(survivor.url, direct_publish=direct_publish) as bus:
        acked_after: list[int] = []
        errors: list[BaseException] = []
        node_named(cluster, leader).lame_duck()
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 8:
            n += 1
            try:
                await bus.publish("duck.x", {"n": n}, msg_id=f"d{n}", timeout=2)
                acked_after.append(n)
            except natsbus.NatsbusError as e:
                errors.append(e)
        # Timeouts, "unavailable" and "connection lost before the ack" are all true.
        assert not [e for e in errors if isinstance(e, natsbus.NoStreamError)], errors[:3]
        assert len(acked_after) >= 10, errors[:3]
        assert await leader_of(bus, "DUCK") != leader
        assert (await bus.stream_info("DUCK"))["state"]["messages"] >= len(acked_after)
