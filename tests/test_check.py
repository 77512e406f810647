"""Health that knows the topology, bus.check() and `natsbus check` / `natsbus status`:
what an operator alerts on, against real servers (one node, and a 3-node cluster for
replicas and leaders)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from conftest import unique

import natsbus
from natsbus.testing import NatsCluster, NatsServer


def natsbus_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbus", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def topology_for(stream: str, **consumers: dict[str, Any]) -> dict[str, Any]:
    return {
        "streams": {
            stream: {
                "subjects": [f"{stream.lower()}.>"],
                "storage": "memory",
                "consumers": consumers,
            }
        }
    }


async def publish(bus: natsbus.Bus, stream: str, n: int) -> None:
    await bus.publish_many([(f"{stream.lower()}.x", {"i": i}) for i in range(n)])


def by_target(report: natsbus.CheckReport, target: str) -> dict[str, natsbus.Check]:
    return {c.name: c for c in report.checks if c.target == target}


@pytest.fixture
async def declared(nats_url: str) -> AsyncIterator[tuple[natsbus.Bus, str]]:
    """A bus whose topology declares a stream with consumers ``a`` (declaring thresholds)
    and ``b`` (declaring none); applied. heal=False: the tests delete things."""
    stream = unique("CHK")
    topo = topology_for(stream, a={"lag_warn": 100, "inactive_crit": "1h"}, b={})
    async with natsbus.connect(nats_url, topology=topo, heal=False) as bus:
        await bus.ensure_streams()
        yield bus, stream


# -- health() --------------------------------------------------------------------------------


async def test_health_is_ok_while_the_topology_is_in_place(
    declared: tuple[natsbus.Bus, str],
) -> None:
    bus, _ = declared
    h = await bus.health()
    assert h.ok and h.problems == []
    assert h.to_dict()["ok"] is True


async def test_health_names_each_missing_stream_and_consumer(nats_url: str) -> None:
    kept, gone = unique("KEPT"), unique("GONE")
    topo = topology_for(kept, billing={}, audit={})
    topo["streams"].update(topology_for(gone, x={})["streams"])
    async with natsbus.connect(nats_url, topology=topo, heal=False) as bus:
        await bus.ensure_streams()
        await bus.jetstream_api(f"CONSUMER.DELETE.{kept}.billing")
        await bus.jetstream_api(f"STREAM.DELETE.{gone}")
        h = await bus.health()
    assert not h.ok and h.connected and h.jetstream
    assert sorted(h.problems) == sorted(
        [f"consumer {kept} > billing is missing", f"stream {gone} is missing"]
    )
    d = h.to_dict()
    assert d["ok"] is False and d["problems"] == h.problems


async def test_health_without_a_topology_does_not_look_at_streams(bus: natsbus.Bus) -> None:
    h = await bus.health()
    assert h.ok and h.problems == []


# -- bus.check() on one server ---------------------------------------------------------------


async def test_check_is_ok_with_nagios_text(declared: tuple[natsbus.Bus, str]) -> None:
    bus, stream = declared
    await publish(bus, stream, 3)
    report = await bus.check()
    assert report.status == "ok" and report.exit_code == 0
    text = str(report)
    assert text.splitlines()[0] == "OK: 1 stream, 2 consumers checked"
    assert f"OK stream {stream}: 3 messages" in text
    lag = by_target(report, f"consumer {stream} > b")["lag"]
    assert lag.status == "ok" and lag.value == 3
    d = report.to_dict()
    assert d["status"] == "ok" and d["exit_code"] == 0
    assert {"name", "target", "status", "message", "value"} <= set(d["checks"][0])
    json.dumps(d)  # JSON-ready


async def test_declared_thresholds_win_over_the_options(
    declared: tuple[natsbus.Bus, str],
) -> None:
    bus, stream = declared
    await publish(bus, stream, 5)
    report = await bus.check(lag_warn=2, lag_crit=50)
    a = by_target(report, f"consumer {stream} > a")["lag"]
    b = by_target(report, f"consumer {stream} > b")["lag"]
    # a declares lag_warn: 100 (and takes lag_crit 50 from the option); b takes both options.
    assert (a.status, a.warn, a.crit) == ("ok", 100, 50)
    assert (b.status, b.warn, b.crit) == ("warning", 2, 50)
    assert b.message == "lag 5 (>= lag_warn 2)"
    assert report.status == "warning" and report.exit_code == 1
    assert str(report).splitlines()[0] == f"WARNING: consumer {stream} > b: lag 5 (>= lag_warn 2)"

    report = await bus.check(lag_crit=5)
    assert by_target(report, f"consumer {stream} > b")["lag"].status == "critical"
    assert report.status == "critical" and report.exit_code == 2


async def test_thresholds_kept_on_the_server_apply_without_a_topology(
    declared: tuple[natsbus.Bus, str], nats_url: str
) -> None:
    declaring, stream = declared
    assert declaring.topology is not None
    await declaring.jetstream_api(
        f"CONSUMER.CREATE.{stream}.c",
        {
            "stream_name": stream,
            "config": {
                "durable_name": "c",
                "ack_policy": "explicit",
                "metadata": {"natsbus.lag_crit": "4", "natsbus.inactive_warn": "1h30m"},
            },
        },
    )
    await publish(declaring, stream, 4)
    async with natsbus.connect(nats_url) as bus:  # no topology: read from the metadata
        report = await bus.check(streams=[stream], lag_warn=1)
    c = by_target(report, f"consumer {stream} > c")
    assert (c["lag"].status, c["lag"].warn, c["lag"].crit) == ("critical", 1, 4)
    assert c["inactive"].warn == 5400
    # the topology bus checks only what it declares
    declared_report = await declaring.check()
    assert not by_target(declared_report, f"consumer {stream} > c")


async def test_a_consumer_at_max_ack_pending_is_stalled(nats_url: str) -> None:
    stream = unique("STALL")
    topo = topology_for(stream, w={"max_ack_pending": 2})
    async with natsbus.connect(nats_url, topology=topo, heal=False) as bus:
        await bus.ensure_streams()
        await publish(bus, stream, 5)
        async with bus.consume(stream, "w") as consumer:
            got: list[natsbus.Message[Any]] = []
            while len(got) < 2:  # delivered, never acked
                got += await consumer.fetch(2 - len(got), timeout=2.0)
            report = await bus.check()
            check = by_target(report, f"consumer {stream} > w")["ack_pending"]
            assert check.status == "critical" and check.value == 2
            assert check.message.startswith("ack pending 2 of 2: stalled")
            assert report.status == "critical"


async def test_inactivity_counts_only_while_work_waits(nats_url: str) -> None:
    stream = unique("IDLE")
    topo = topology_for(stream, idle={}, busy={})
    async with natsbus.connect(nats_url, topology=topo, heal=False) as bus:
        await bus.ensure_streams()
        async with bus.consume(stream, "idle"):
            pass
        await asyncio.sleep(0.6)
        report = await bus.check(inactive_warn=0.5, inactive_crit="1h")
        idle = by_target(report, f"consumer {stream} > busy")["inactive"]
        assert idle.status == "ok" and "nothing pending" in idle.message  # nothing to do
        await publish(bus, stream, 1)
        report = await bus.check(inactive_warn="500ms", inactive_crit="1h")
        busy = by_target(report, f"consumer {stream} > busy")["inactive"]
        assert busy.status == "warning", busy
        assert busy.value is not None and busy.value >= 0.5
        assert busy.message.startswith("never active (created ") and "1 outstanding" in busy.message
        report = await bus.check(inactive_warn=3600)
        assert by_target(report, f"consumer {stream} > busy")["inactive"].status == "ok"


async def test_missing_stream_and_consumer_are_critical(
    declared: tuple[natsbus.Bus, str],
) -> None:
    bus, stream = declared
    await bus.jetstream_api(f"CONSUMER.DELETE.{stream}.b")
    report = await bus.check()
    assert by_target(report, f"consumer {stream} > b")["consumer"].status == "critical"
    assert report.status == "critical"
    await bus.jetstream_api(f"STREAM.DELETE.{stream}")
    report = await bus.check()
    assert by_target(report, f"stream {stream}")["stream"].message == "missing"
    assert by_target(report, f"consumer {stream} > a")["consumer"].status == "critical"
    named = await bus.check(streams=[unique("NOPE")])
    assert named.status == "critical" and [c.message for c in named.problems] == ["missing"]


async def test_without_a_topology_every_durable_is_checked_and_ephemerals_are_not(
    bus: natsbus.Bus,
) -> None:
    stream = unique("ALL")
    await bus.jetstream_api(
        f"STREAM.CREATE.{stream}",
        {"name": stream, "subjects": [f"{stream.lower()}.>"], "storage": "memory"},
    )
    await bus.jetstream_api(
        f"CONSUMER.CREATE.{stream}.d",
        {"stream_name": stream, "config": {"durable_name": "d", "ack_policy": "explicit"}},
    )
    async with bus.replay(stream, follow=True):  # an ephemeral ordered consumer
        report = await bus.check()
    targets = {c.target for c in report.checks if c.target.startswith(f"consumer {stream} ")}
    assert targets == {f"consumer {stream} > d"}
    assert f"stream {stream}" in {c.target for c in report.checks}


async def test_bad_thresholds_are_refused(bus: natsbus.Bus) -> None:
    with pytest.raises(natsbus.InvalidArgumentError, match="lag_warn"):
        await bus.check(lag_warn=-1)
    with pytest.raises(natsbus.InvalidArgumentError, match="inactive_crit"):
        await bus.check(inactive_crit="soon")


async def test_not_connected_is_critical(fresh_server: NatsServer) -> None:
    async with natsbus.connect(fresh_server.url) as bus:
        assert (await bus.check()).status == "ok"
        fresh_server.stop()
        deadline = time.monotonic() + 10
        while bus.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        report = await bus.check(timeout=1.0)
        assert report.status == "critical" and report.exit_code == 2
        assert report.summary.startswith("CRITICAL: connection: not connected to nats://")
        assert not (await bus.health(timeout=1.0)).ok
        fresh_server.start()  # close() waits for the server to confirm the last acks


# -- the CLI ---------------------------------------------------------------------------------


def write_topology(tmp_path: Path, stream: str, consumer: str, **settings: Any) -> str:
    lines = [
        "streams:",
        f"  {stream}:",
        f'    subjects: ["{stream.lower()}.>"]',
        "    storage: memory",
        "    consumers:",
        f"      {consumer}:",
        "        ack_policy: explicit",
        *(f"        {k}: {v}" for k, v in settings.items()),
    ]
    path = tmp_path / "topology.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


async def test_cli_check_exit_codes(nats_url: str, tmp_path: Path) -> None:
    stream = unique("CLI")
    path = write_topology(tmp_path, stream, "worker", lag_crit=10)
    assert natsbus_cli("apply", path, "-s", nats_url).returncode == 0
    async with natsbus.connect(nats_url) as bus:
        await publish(bus, stream, 3)

    ok = natsbus_cli("check", path, "-s", nats_url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK: 1 stream, 1 consumer checked")

    warn = natsbus_cli("check", path, "-s", nats_url, "--lag-warn", "2")
    assert warn.returncode == 1
    first = warn.stdout.splitlines()[0]
    assert first == f"WARNING: consumer {stream} > worker: lag 3 (>= lag_warn 2)"

    # the declared lag_crit 10 wins over --lag-crit 1
    declared = natsbus_cli("check", path, "-s", nats_url, "--lag-crit", "1")
    assert declared.returncode == 0, declared.stdout

    crit = natsbus_cli("check", "-s", nats_url, "--stream", stream, "--stream", "NOPE_X")
    assert crit.returncode == 2
    assert "CRITICAL stream NOPE_X: missing" in crit.stdout

    out = natsbus_cli("check", path, "-s", nats_url, "--json", "--ack-pending-warn", "0")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["status"] == "warning" and report["exit_code"] == 1
    ack = [c for c in report["checks"] if c["name"] == "ack_pending"]
    assert ack[0]["value"] == 0 and ack[0]["warn"] == 0


def test_cli_check_without_a_server_is_critical_in_one_line() -> None:
    result = natsbus_cli("check", "-s", "nats://127.0.0.1:1", "--timeout", "1s")
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("CRITICAL: connection: cannot connect to ")
    assert "Traceback" not in result.stderr
    out = natsbus_cli("check", "-s", "nats://127.0.0.1:1", "--timeout", "1s", "--json")
    assert out.returncode == 2 and json.loads(out.stdout)["status"] == "critical"


def test_cli_check_that_cannot_run_is_unknown(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("streams:\n  X:\n    subjects: [x]\n    max_agee: 7d\n", encoding="utf-8")
    result = natsbus_cli("check", str(broken), "-s", "nats://127.0.0.1:1")
    assert result.returncode == 3 and result.stdout.startswith("UNKNOWN: ")
    assert "max_agee" in result.stdout
    usage = natsbus_cli("check", "--lag-warn", "many")
    assert usage.returncode == 3 and "not a count" in usage.stderr


async def test_cli_status_columns_and_one_stream(nats_url: str, tmp_path: Path) -> None:
    stream = unique("STAT")
    path = write_topology(tmp_path, stream, "worker", max_ack_pending=1)
    assert natsbus_cli("apply", path, "-s", nats_url).returncode == 0
    async with natsbus.connect(nats_url) as bus:
        await publish(bus, stream, 4)
        async with bus.consume(stream, "worker") as consumer:
            msg = await consumer.next(timeout=2.0)
            assert msg is not None  # delivered, not acked: the consumer is at its limit
    result = natsbus_cli("status", path, "-s", nats_url)
    assert result.returncode == 0, result.stderr
    for header in ("REPLICAS", "LEADER", "MAX ACK PENDING", "ACK FLOOR", "LAST ACTIVE"):
        assert header in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith(f"{stream}/worker"))
    cells = row.split()
    assert cells[1:7] == ["pull", "3", "1", "1", "0", "0"]  # pending, ack pending, max, floor
    assert cells[-1] == "STALLED" and cells[-2] == "ago"

    one = natsbus_cli("status", stream, "-s", nats_url)
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith(f"stream {stream} (nats-server ")
    assert "replicas  1" in one.stdout and f"{stream}/worker" in one.stdout
    data = json.loads(natsbus_cli("status", stream, "--json", "-s", nats_url).stdout)
    assert data["name"] == stream and data["consumers"][0]["max_ack_pending"] == 1
    missing = natsbus_cli("status", "NO_SUCH_STREAM", "-s", nats_url)
    assert missing.returncode == 1 and "stream NO_SUCH_STREAM not found" in missing.stderr


# -- replicas and leaders: a 3-node cluster --------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    """A 3-node cluster of this module's own (its tests stop nodes)."""
    with NatsCluster(3) as c:
        yield c


R3 = "R3CHK"
R3_TOPOLOGY = {
    "streams": {
        R3: {"subjects": ["r3chk.>"], "replicas": 3, "consumers": {"worker": {}}},
    }
}


async def wait_for(bus: natsbus.Bus, ok: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Optional[Any] = None
    while time.monotonic() < deadline:
        last = await bus.check(timeout=2.0)
        if ok(last):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}; last report:\n{last}")


async def test_cluster_replicas_and_leader_are_checked(cluster: NatsCluster) -> None:
    # Placing an R3 stream needs every peer current in the meta group.
    await asyncio.get_running_loop().run_in_executor(None, cluster.wait_settled)
    async with natsbus.connect(cluster.nodes[0].url, topology=R3_TOPOLOGY, heal=False) as bus:
        await bus.ensure_streams()
        await publish(bus, R3, 3)
        report = await wait_for(bus, lambda r: r.status == "ok", "the R3 stream settles")
        stream = by_target(report, f"stream {R3}")
        assert stream["leader"].message.startswith("R3, leader n")
        assert stream["replicas"].message == "2 replicas current"
        assert "leader" in by_target(report, f"consumer {R3} > worker")
        assert (await bus.health()).ok

        # a replica down: still served (WARNING), and health says which
        info = await bus.stream_info(R3)
        leader = info["cluster"]["leader"]
        down = next(i for i, n in enumerate(cluster.nodes) if n.server_name not in (leader, "n1"))
        name = cluster.nodes[down].server_name
        await asyncio.get_running_loop().run_in_executor(None, cluster.stop_node, down)
        await publish(bus, R3, 2)
        report = await wait_for(
            bus, lambda r: by_target(r, f"stream {R3}")["replicas"].status == "warning", "offline"
        )
        assert report.status == "warning" and report.exit_code == 1
        assert f"replica {name} is offline" in by_target(report, f"stream {R3}")["replicas"].message
        h = await bus.health()
        assert not h.ok
        assert any(p.startswith(f"stream {R3}: replica {name} is offline") for p in h.problems)

        cli = natsbus_cli("check", "-s", cluster.nodes[0].url, "--stream", R3)
        assert cli.returncode == 1, cli.stdout
        status = natsbus_cli("status", R3, "-s", cluster.nodes[0].url)
        assert f"{name} OFFLINE" in status.stdout and "REPLICA" in status.stdout

        await asyncio.get_running_loop().run_in_executor(None, cluster.start_node, down)
        await wait_for(bus, lambda r: r.status == "ok", "the replica catches up")


async def test_cluster_stream_without_a_leader_is_critical(cluster: NatsCluster) -> None:
    await asyncio.get_running_loop().run_in_executor(None, cluster.wait_settled)
    async with natsbus.connect(cluster.url) as admin:
        leader = (await admin.stream_info(R3))["cluster"]["leader"]
    # Keep a follower alone: with its leader and the other follower gone, no leader is left.
    alone = next(i for i, n in enumerate(cluster.nodes) if n.server_name != leader)
    url = cluster.nodes[alone].url
    async with natsbus.connect(url, topology=R3_TOPOLOGY, heal=False) as bus:
        loop = asyncio.get_running_loop()
        for i in range(len(cluster.nodes)):
            if i != alone:
                await loop.run_in_executor(None, cluster.stop_node, i)
        report = await wait_for(
            bus,
            lambda r: (
                "leader" in by_target(r, f"stream {R3}")
                and by_target(r, f"stream {R3}")["leader"].status == "critical"
            ),
            "no leader",
            timeout=40,
        )
        assert report.status == "critical" and report.exit_code == 2
        assert "without a leader" in by_target(report, f"stream {R3}")["leader"].message
        h = await bus.health()
        assert not h.ok and f"stream {R3}: no leader" in h.problems
        cli = natsbus_cli("check", "-s", url, "--stream", R3, "--timeout", "2s")
        assert cli.returncode == 2 and cli.stdout.startswith("CRITICAL: ")
