"""Issue 13: what a start-up, a plan and an apply cost follows the topology, not the server.

Against real servers: an agent's apply on a shared server asks only about its own streams and
shows the rest as one count; a partial apply says per change what happened; and plan refuses
what the server is known to refuse before anything is sent. Timings are in bench/ (scale).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import natsbus
from natsbus.testing import NatsServer


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbus", *args], capture_output=True, text=True, timeout=60
    )


MINE = {
    "streams": {
        "MINE": {
            "subjects": ["mine.>"],
            "storage": "memory",
            "consumers": {"w": {"ack_policy": "explicit"}},
        }
    }
}


async def test_a_shared_server_is_one_line_of_the_plan(
    fresh_server: NatsServer, tmp_path: Path
) -> None:
    async with natsbus.connect(fresh_server.url) as bus:
        for i in range(25):
            await bus.jetstream_api(
                f"STREAM.CREATE.TEAM{i}",
                {"name": f"TEAM{i}", "subjects": [f"team{i}.>"], "storage": "memory"},
            )
        applied = await bus.ensure_streams(MINE)
        # The agent's apply never read the other teams' streams.
        assert not applied.by_action("unmanaged")
        assert "TEAM" not in str(applied)
        plan = await bus.plan(MINE)
        assert len(plan.by_action("unmanaged")) == 25
        text = str(plan)
        assert "- unmanaged: 25 streams on the server but not in the topology" in text
        assert "TEAM3" not in text
        assert "TEAM3" in plan.render(unmanaged=True)
        assert plan.render(changes_only=True).splitlines() == [text.splitlines()[0]]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(MINE))
    out = cli("plan", str(path), "-s", fresh_server.url)
    assert out.returncode == 0, out.stderr
    assert "25 streams" in out.stdout and "TEAM3" not in out.stdout
    out = cli("plan", str(path), "--unmanaged", "-s", fresh_server.url)
    assert "- unmanaged stream TEAM3" in out.stdout
    out = cli("verify", str(path), "--changes-only", "-s", fresh_server.url)
    assert out.returncode == 0 and "unchanged" not in out.stdout.splitlines()[-1]


@pytest.fixture
def small_server() -> Iterator[NatsServer]:
    """A server whose JetStream holds at most 1 MB of memory storage."""
    with NatsServer(config="jetstream { max_memory_store: 1MB }") as server:
        yield server


PARTIAL = {
    "streams": {
        "FITS": {
            "subjects": ["fits.>"],
            "storage": "memory",
            "max_bytes": "100KB",
            "consumers": {"w": {"ack_policy": "explicit"}},
        },
        "TOO_BIG": {"subjects": ["big.>"], "storage": "memory", "max_bytes": "10MB"},
    }
}


async def test_a_partial_apply_says_what_was_applied_failed_and_not_attempted(
    small_server: NatsServer, tmp_path: Path
) -> None:
    async with natsbus.connect(small_server.url) as bus:
        with pytest.raises(natsbus.ApplyError) as raised:
            await bus.ensure_streams(PARTIAL)
        plan = raised.value.plan
        assert plan is not None
        outcomes = {c.target: (c.outcome, c.error) for c in plan.changes}
        assert outcomes["stream FITS"] == ("applied", None)
        outcome, error = outcomes["stream TOO_BIG"]
        assert outcome == "failed" and error and "insufficient" in error.lower()
        assert outcomes["consumer FITS/w"] == ("not_attempted", None)
        text = str(plan)
        assert "+ create stream FITS" in text  # what went through reads as planned
        assert "x FAILED to create stream TOO_BIG" in text
        assert "? not attempted: create consumer FITS > w" in text
        # What the report says is what the server has.
        await bus.stream_info("FITS")
        with pytest.raises(natsbus.StreamNotFoundError):
            await bus.stream_info("TOO_BIG")
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(PARTIAL))
    out = cli("apply", str(path), "--json", "-s", small_server.url)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["applied"] is False
    by_target = {(c["stream"], c["consumer"]): c.get("outcome") for c in report["plan"]["changes"]}
    # FITS exists now (the first apply made it); TOO_BIG fails again; w is still not made.
    assert by_target[("TOO_BIG", None)] == "failed"
    assert by_target[("FITS", "w")] == "not_attempted"


async def test_plan_refuses_replicas_on_a_server_that_is_not_clustered(
    fresh_server: NatsServer,
) -> None:
    topology: dict[str, Any] = {
        "streams": {"R3": {"subjects": ["r3.>"], "replicas": 3, "storage": "memory"}}
    }
    async with natsbus.connect(fresh_server.url) as bus:
        plan = await bus.plan(topology)
        (change,) = plan.by_action("blocked")
        assert change.reason and "not clustered" in change.reason and "10074" in change.reason
        with pytest.raises(natsbus.ApplyError, match="not clustered"):
            await bus.ensure_streams(topology)
        with pytest.raises(natsbus.StreamNotFoundError):
            await bus.stream_info("R3")  # refused before anything was sent


async def test_concurrent_agents_applying_one_topology_all_succeed(
    fresh_server: NatsServer,
) -> None:
    topology = {
        "streams": {
            f"S{i}": {
                "subjects": [f"s{i}.>"],
                "storage": "memory",
                "consumers": {f"c{j}": {"ack_policy": "explicit"} for j in range(3)},
            }
            for i in range(20)
        }
    }
    buses = [await natsbus.connect(fresh_server.url) for _ in range(6)]
    try:
        plans = await asyncio.gather(*(b.ensure_streams(topology) for b in buses))
        assert all(not p.by_action("blocked") for p in plans)
        again = await buses[0].plan(topology)
        assert not again.pending
        assert len(again.by_action("unchanged")) == 20 * 4
    finally:
        await asyncio.gather(*(b.close() for b in buses))


async def test_plan_refuses_more_replicas_than_the_cluster_has(nats_cluster: Any) -> None:
    topology = {"streams": {"R5": {"subjects": ["r5.>"], "replicas": 5, "storage": "memory"}}}
    async with natsbus.connect(nats_cluster.urls) as bus:
        plan = await bus.plan(topology)
        (change,) = plan.by_action("blocked")
        assert change.reason and "on a cluster of 3 servers" in change.reason
        r3 = await bus.plan({"streams": {"R3": {"subjects": ["r3p.>"], "replicas": 3}}})
        assert not r3.by_action("blocked")
