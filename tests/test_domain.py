"""A hub manages and uses a leafnode's JetStream through its domain (``connect(domain=...)``,
``--domain``), as nats-py's ``jetstream(domain=...)`` does."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import natsbus
from natsbus.testing import NatsServer

TOPOLOGY = {
    "streams": {
        "EDGE_EVENTS": {
            "subjects": ["edge.events.>"],
            "storage": "memory",
            "consumers": {"hub-reader": {"ack_policy": "explicit"}},
        }
    }
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def hub_and_leaf() -> Iterator[tuple[NatsServer, NatsServer]]:
    port = free_port()
    hub = NatsServer(
        server_name="hub",
        jetstream_domain="hub",
        config=f"leafnodes {{\n  listen: 127.0.0.1:{port}\n}}",
    )
    leaf = NatsServer(
        server_name="leaf",
        jetstream_domain="edge",
        config=f'leafnodes {{\n  remotes: [ {{ url: "nats-leaf://127.0.0.1:{port}" }} ]\n}}',
    )
    with hub, leaf:
        deadline = time.monotonic() + 20
        import urllib.request

        while time.monotonic() < deadline:
            with urllib.request.urlopen(hub.monitor_url + "/leafz", timeout=5) as r:
                if json.load(r).get("leafnodes"):
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError("the leafnode did not connect")
        yield hub, leaf


async def test_the_hub_manages_and_uses_the_leafs_jetstream(
    hub_and_leaf: tuple[NatsServer, NatsServer],
) -> None:
    hub, leaf = hub_and_leaf
    async with natsbus.connect(hub.url, domain="edge", topology=TOPOLOGY) as bus:
        plan = await bus.ensure_streams()
        assert [c.action for c in plan.changes if c.stream == "EDGE_EVENTS"] == [
            "create",
            "create",
        ]
        assert not (await bus.plan()).pending
        info = await bus.stream_info("EDGE_EVENTS")
        assert info["config"]["name"] == "EDGE_EVENTS"
    # It was created in the leaf's JetStream, not the hub's.
    async with natsbus.connect(leaf.url) as on_leaf:
        assert (await on_leaf.stream_info("EDGE_EVENTS"))["config"]["subjects"] == ["edge.events.>"]
        ack = await on_leaf.publish("edge.events.door", {"open": True})
        assert ack.stream == "EDGE_EVENTS"
    async with natsbus.connect(hub.url) as hub_only:
        with pytest.raises(natsbus.StreamNotFoundError):
            await hub_only.stream_info("EDGE_EVENTS")
    # Consuming through the domain from the hub.
    async with natsbus.connect(hub.url, domain="edge") as bus:
        async with bus.consume("EDGE_EVENTS", "hub-reader") as c:
            msg = await c.next(timeout=10)
            assert msg is not None and msg.data == {"open": True}
            await msg.ack_sync()
        h = await bus.health()
        assert h.ok and h.streams == 1


def test_the_cli_takes_a_domain(
    hub_and_leaf: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    hub, _ = hub_and_leaf
    topo = tmp_path / "topology.json"
    topo.write_text(json.dumps(TOPOLOGY))
    out = subprocess.run(
        [sys.executable, "-m", "natsbus", "verify", str(topo), "-s", hub.url, "--domain", "edge"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "natsbus", "status", "-s", hub.url, "--domain", "edge", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "EDGE_EVENTS" in out.stdout


async def test_a_bad_domain_or_inbox_prefix_is_refused_before_connecting() -> None:
    with pytest.raises(natsbus.InvalidArgumentError, match="domain"):
        await natsbus.connect("nats://127.0.0.1:1", domain="a.b")
    with pytest.raises(natsbus.InvalidArgumentError, match="inbox_prefix"):
        await natsbus.connect("nats://127.0.0.1:1", inbox_prefix="_INBOX.*")
