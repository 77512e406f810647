"""The seed-system examples under examples/: topologies validate and apply
idempotently, and each ``agents.main(url)`` runs its flow end to end."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import message_count, stored

import natsbus
from natsbus.testing import NatsCluster, NatsServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SYSTEMS = ["agentic_platform", "observability_agent", "aivo", "aigentflow", "iot_pulse"]

pytestmark = pytest.mark.timeout(60)


def load_agents(system: str) -> ModuleType:
    """Import examples/<system>/agents.py by path (examples/ is not a package)."""
    name = f"natsbus_example_{system}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / system / "agents.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pydantic resolve annotations through it
    spec.loader.exec_module(module)
    return module


def topology(system: str, file: str = "topology.yaml") -> Path:
    return EXAMPLES / system / file


async def consumer_counts(bus: natsbus.Bus, stream: str, durable: str) -> tuple[int, int]:
    info = await bus.consumer_info(stream, durable)
    return info["num_pending"], info["num_ack_pending"]


async def apply_twice(url: str, path: Path) -> None:
    """The first ensure_streams creates everything; the second plans nothing."""
    topo = natsbus.Topology.load(path)
    async with natsbus.connect(url, name="pytest", topology=path) as bus:
        first = await bus.ensure_streams()
        assert {c.action for c in first.changes} == {"create"}
        assert len(first.changes) == len(topo.streams) + len(topo.consumers)
        second = await bus.ensure_streams()
        assert not second.pending, str(second)
        await bus.verify()  # live matches the file


# ---------------------------------------------------------------- topologies


@pytest.mark.parametrize("system", SYSTEMS)
def test_topology_validates(system: str) -> None:
    topo = natsbus.Topology.load(topology(system))
    assert topo.streams
    assert topo.source is not None


def test_every_example_has_main() -> None:
    for system in SYSTEMS:
        assert callable(load_agents(system).main), system


def test_observability_original_topology_overlaps_are_reported() -> None:
    with pytest.raises(natsbus.TopologyError) as caught:
        natsbus.Topology.load(topology("observability_agent", "topology.original.yaml"))
    problems = caught.value.problems
    by_field = {p.field: p for p in problems}
    assert set(by_field) == {
        "streams.ROOT_CAUSE.subjects.1",
        "streams.RUNBOOK_EXECUTIONS.subjects.0",
    }
    rc = by_field["streams.ROOT_CAUSE.subjects.1"]
    assert '"root_cause_result"' in rc.message and "RESPONSES" in rc.message
    rb = by_field["streams.RUNBOOK_EXECUTIONS.subjects.0"]
    assert '"runbook.execute"' in rb.message and '"runbook.*"' in rb.message
    for p in problems:
        assert p.file is not None and p.file.endswith("topology.original.yaml")
        assert p.line is not None


def test_observability_fixed_topology_keeps_every_stream() -> None:
    fixed = natsbus.Topology.load(topology("observability_agent")).to_dict()["streams"]
    assert len(fixed) == 14
    owners = [name for name, s in fixed.items() if "root_cause_result" in s["subjects"]]
    assert owners == ["RESPONSES"]
    assert set(fixed["RUNBOOK_EXECUTIONS"]["subjects"]) == {"runbook.execute", "runbook.status.*"}
    for stream in fixed.values():  # the seed's shared limits, via the YAML merge key
        assert stream["storage"] == "memory" and stream["max_msgs"] == 10000
        assert stream.get("consumers", {}).keys() <= {
            "orchestrator",
            *fixed["AGENT_TASKS"]["subjects"],
        }
    assert "consumers" not in fixed["METRICS"]


# ---------------------------------------------------------------- agentic platform


async def test_agentic_platform(
    fresh_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = fresh_server.url
    await apply_twice(url, topology("agentic_platform"))
    await load_agents("agentic_platform").main(url)
    out = capsys.readouterr().out
    assert "wf-2: tool not ready, retrying (nak)" in out
    assert "wf-2: triage-alert finished (delivery 2)" in out
    assert "averages: {'cpu': 44.5, 'tokens': 1059.5}" in out
    assert "event-logger: 241 events {'metrics': 240, 'agent': 1}" in out
    assert "duplicate=True" in out
    assert out.count("executing restart on agent-2") == 1
    assert "notify user 42: workflow wf-2 finished" in out
    assert "log-aggregator: handled 1, failed 0" in out

    async with natsbus.connect(url) as bus:
        # Work queue: every workflow acked, so none is left; wf-2 was delivered twice.
        assert await message_count(bus, "WORKFLOWS") == 0
        assert await consumer_counts(bus, "WORKFLOWS", "workflow-processor") == (0, 0)
        info = await bus.consumer_info("WORKFLOWS", "workflow-processor")
        assert info["delivered"]["consumer_seq"] == 4
        # Analytics read only the 240 metrics; EVENTS keeps everything (limits).
        assert await message_count(bus, "EVENTS") == 241
        assert await consumer_counts(bus, "EVENTS", "event-analytics") == (0, 0)
        assert (await bus.consumer_info("EVENTS", "event-analytics"))["delivered"][
            "consumer_seq"
        ] == 240
        # The push consumers were read: the event logger saw and acked all 241.
        assert await consumer_counts(bus, "EVENTS", "event-logger") == (0, 0)
        logger = await bus.consumer_info("EVENTS", "event-logger")
        assert logger["config"]["deliver_subject"] == "deliver.event-logger"
        assert logger["delivered"]["stream_seq"] == 241
        assert logger["ack_floor"]["stream_seq"] == 241
        # The command was stored once and executed once.
        commands = await bus.stream_info("COMMANDS")
        assert commands["state"]["last_seq"] == 1 and commands["state"]["messages"] == 0
        assert await consumer_counts(bus, "COMMANDS", "command-executor") == (0, 0)
        # Interest retention: once the (push) dispatcher acked the notification,
        # no consumer still has to see it, so the stream dropped it.
        assert await consumer_counts(bus, "NOTIFICATIONS", "notification-dispatcher") == (0, 0)
        notifications = await bus.stream_info("NOTIFICATIONS")
        assert notifications["state"]["last_seq"] == 1
        assert notifications["state"]["messages"] == 0
        assert await message_count(bus, "LOGS") == 1
        assert await consumer_counts(bus, "LOGS", "log-aggregator") == (0, 0)


# ---------------------------------------------------------------- observability agent


async def test_observability_agent(
    fresh_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = fresh_server.url
    await apply_twice(url, topology("observability_agent"))
    agents = load_agents("observability_agent")
    await agents.main(url)
    out = capsys.readouterr().out
    assert "orchestrator: alert A-1042 [critical]" in out
    assert "orchestrator: root cause 'bad deploy (payment-service v2.4.1" in out
    for name in agents.SPECIALISTS:
        assert f"  {name}: {agents.FINDINGS[name]}" in out

    async with natsbus.connect(url) as bus:
        assert await message_count(bus, "ALERTS") == 1
        assert await consumer_counts(bus, "ALERTS", "orchestrator") == (0, 0)
        assert await message_count(bus, "AGENT_TASKS") == 4
        for name in agents.SPECIALISTS:
            assert await consumer_counts(bus, "AGENT_TASKS", name) == (0, 0)
            info = await bus.consumer_info("AGENT_TASKS", name)
            assert info["delivered"]["consumer_seq"] == 1  # its own task only
        # Four answers for the orchestrator plus the recorded root cause.
        assert await message_count(bus, "RESPONSES") == 5
        assert await consumer_counts(bus, "RESPONSES", "orchestrator") == (0, 0)
        subject, data, _ = await stored(bus, "RESPONSES", 5)
        assert subject == "root_cause_result"
        verdict = json.loads(data)
        assert verdict["alert_id"] == "A-1042" and verdict["confidence"] == 0.9
        assert len(verdict["evidence"]) == 4
        # The request/reply subject is not captured by any stream.
        assert await message_count(bus, "ROOT_CAUSE") == 0
        assert await message_count(bus, "NOTIFICATIONS") == 1


# ---------------------------------------------------------------- AIVO (3-node cluster)


@pytest.fixture
def aivo_cluster() -> Iterator[NatsCluster]:
    with NatsCluster(3) as cluster:
        yield cluster


async def test_aivo_on_a_cluster(
    aivo_cluster: NatsCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    url = aivo_cluster.url
    await apply_twice(url, topology("aivo"))
    await load_agents("aivo").main(url)
    out = capsys.readouterr().out
    assert "indexed 55 events into Postgres" in out
    assert "DLQ holds 2 events:" in out
    assert (
        "dead-lettered LEARNING#3 (learning.activity.completed) on delivery 5: handler failed "
        "on the last allowed delivery (5 of 5): RejectedByDatabase: violates check constraint"
    ) in out
    assert "dead-lettered HOMEWORK#2 (homework.question.asked) on delivery 1: " in out
    assert "analytics FOCUS: {'focus.ping': 50, 'focus.loss.idle': 1}" in out

    async with natsbus.connect(aivo_cluster.urls) as bus:
        for stream in ("LEARNING", "FOCUS", "HOMEWORK", "RECOMMENDATION", "DLQ"):
            info = await bus.stream_info(stream)
            assert info["config"]["num_replicas"] == 3
            assert len(info["cluster"]["replicas"]) == 2, stream
        for stream in ("LEARNING", "FOCUS", "HOMEWORK", "RECOMMENDATION"):
            assert await consumer_counts(bus, stream, "indexer") == (0, 0), stream
        for stream in ("LEARNING", "FOCUS"):
            assert await consumer_counts(bus, stream, "analytics") == (0, 0), stream
        # Streams keep their events (limits retention), poison ones included.
        assert await message_count(bus, "LEARNING") == 3
        assert await message_count(bus, "FOCUS") == 51

        # The DLQ holds both poison events, unchanged, with where they came from.
        assert await message_count(bus, "DLQ") == 2
        dead: dict[str, tuple[str, bytes, dict[str, str]]] = {}
        for seq in (1, 2):
            subject, data, headers = await stored(bus, "DLQ", seq)
            dead[headers["Natsbus-Dead-Letter-Stream"]] = (subject, data, headers)
        subject, data, headers = dead["LEARNING"]
        assert subject == "dlq.learning"
        assert json.loads(data)["duration_ms"] == -5
        assert headers["Natsbus-Dead-Letter-Subject"] == "learning.activity.completed"
        assert headers["Natsbus-Dead-Letter-Sequence"] == "3"
        assert headers["Natsbus-Dead-Letter-Consumer"] == "indexer"
        assert headers["Natsbus-Dead-Letter-Delivered"] == "5"
        assert "check constraint" in headers["Natsbus-Dead-Letter-Reason"]
        subject, data, headers = dead["HOMEWORK"]
        assert subject == "dlq.homework" and data == b"\x00 not json"
        assert headers["Natsbus-Dead-Letter-Delivered"] == "1"
        assert "does not decode into Event" in headers["Natsbus-Dead-Letter-Reason"]
        # The worker terminated them after dead-lettering: nothing waits on a redelivery.
        info = await bus.consumer_info("LEARNING", "indexer")
        assert info["num_redelivered"] == 0
        assert info["ack_floor"]["stream_seq"] == 3


# ---------------------------------------------------------------- aigentflow


async def test_aigentflow(fresh_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pydantic", minversion="2.11")
    url = fresh_server.url
    await apply_twice(url, topology("aigentflow"))
    await load_agents("aigentflow").main(url)
    out = capsys.readouterr().out
    assert "health: up" in out
    assert "planner replied: ['research release notes', 'draft release notes', 'review']" in out
    assert "planner refused: 500 ValueError: a plan needs a goal" in out
    assert "subscriber handled 3 events" in out
    assert "dashboard: agents: planner started; workflows: started (up to AGENT_EVENTS#2)" in out
    assert "after restart the subscriber handled 2 events" in out
    assert "on-call paged: task" in out
    # The restarted dashboard replayed only what came after its snapshot.
    assert "dashboard restored from its snapshot (AGENT_EVENTS#2), replayed 1 newer event" in out
    assert "dashboard: agents: planner failed; workflows: started (up to AGENT_EVENTS#3)" in out
    assert "planner's last event: agent.failed (AGENT_EVENTS#3)" in out
    assert "audit #1: audit.mutation workflow.start on workflow " in out

    async with natsbus.connect(url) as bus:
        assert await message_count(bus, "AGENT_EVENTS") == 3
        assert await message_count(bus, "TASK_EVENTS") == 2
        assert await message_count(bus, "AUDIT_EVENTS") == 1
        for stream, durable in [
            ("AGENT_EVENTS", "api-agent-consumer"),
            ("AGENT_EVENTS", "api-workflow-consumer"),
            ("TASK_EVENTS", "api-task-consumer"),
        ]:
            assert await consumer_counts(bus, stream, durable) == (0, 0), durable
        # The replays left no consumer behind: only the two declared durables remain.
        assert (await bus.stream_info("AGENT_EVENTS"))["state"]["consumer_count"] == 2
        assert (await bus.stream_info("AUDIT_EVENTS"))["state"]["consumer_count"] == 0
        # camelCase on the wire, as the TypeScript services expect.
        subject, data, headers = await stored(bus, "TASK_EVENTS", 1)
        assert subject == "task.research.created"
        event: dict[str, Any] = json.loads(data)
        assert {"tenantId", "taskId", "taskType", "timestamp", "source"} <= event.keys()
        assert headers["Nats-Msg-Id"] == event["id"]


# ---------------------------------------------------------------- OpsConductor-Pulse IoT


async def test_iot_pulse(fresh_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = fresh_server.url
    await apply_twice(url, topology("iot_pulse"))
    await load_agents("iot_pulse").main(url)
    out = capsys.readouterr().out
    assert "ingest: 625 received, 600 stored" in out
    assert "batch writer: 600 readings in " in out
    assert "route-crm: https://crm.example.com/b returned 503 (attempt 3)" in out
    assert "routes: 2 delivered, 2 dead-lettered" in out
    assert (
        "DLQ#1: ROUTES#4 routes.tenant-1.route-typo, delivery 1: "
        "'htps://hooks.example.com/d' is not an https URL"
    ) in out
    assert (
        "DLQ#2: ROUTES#2 routes.tenant-1.route-crm, delivery 3: handler failed on the last "
        "allowed delivery (3 of 3): EndpointDown: https://crm.example.com/b returned 503"
    ) in out
    assert "route-crm: delivered to https://crm.example.com/b (attempt 1)" in out
    assert "routes: 3 delivered after re-driving 1, 1 left in the DLQ" in out

    async with natsbus.connect(url) as bus:
        # The 25 retried readings were dropped as duplicates.
        assert await message_count(bus, "TELEMETRY") == 600
        assert await consumer_counts(bus, "TELEMETRY", "ingest-workers") == (0, 0)
        assert await message_count(bus, "SHADOW") == 1
        assert await message_count(bus, "COMMANDS") == 1
        # Work queue: delivered jobs were acked, the failing ones dead-lettered and
        # terminated, and the CRM's re-driven (ROUTES#5) and delivered.
        routes = await bus.stream_info("ROUTES")
        assert routes["state"]["messages"] == 0 and routes["state"]["last_seq"] == 5
        info = await bus.consumer_info("ROUTES", "route-delivery")
        assert (info["num_pending"], info["num_ack_pending"]) == (0, 0)
        assert info["delivered"]["consumer_seq"] == 7  # 4 jobs + 2 retries + the re-drive
        # Two dead letters were stored; the re-drive removed the CRM's, the
        # misconfigured route's stays, unchanged, with where it came from.
        dlq = await bus.stream_info("DLQ")
        assert dlq["state"]["last_seq"] == 2 and dlq["state"]["messages"] == 1
        (left,) = await bus.dead_letters("DLQ")
        assert left.seq == 1 and left.message.subject == "dlq.routes"
        assert (left.stream, left.consumer, left.subject) == (
            "ROUTES",
            "route-delivery",
            "routes.tenant-1.route-typo",
        )
        assert (left.sequence, left.delivered) == (4, 1)
        assert left.reason == "'htps://hooks.example.com/d' is not an https URL"
        assert left.message.data["route_id"] == "route-typo"


# ---------------------------------------------------------------- as services


# Each example's agents as a service (``agents.py --serve``: its agent_main under
# natsbus.run, stopped by SIGTERM): a message it consumes, the consumer that must take
# it, and a stream whose message count then shows the outcome.
SERVICES: list[tuple[str, list[str], str, Any, tuple[str, str], tuple[str, int]]] = [
    (
        "agentic_platform",
        [],
        "workflows.execution.start",
        {"workflow_id": "wf-9", "name": "probe"},
        ("WORKFLOWS", "workflow-processor"),
        ("WORKFLOWS", 0),
    ),
    (
        "aigentflow",
        [],
        "task.research.created",
        {
            "id": "6a1f6c1e-2a44-4d8e-9a43-0c8f1f9d2b11",
            "timestamp": "2026-01-10T00:00:00Z",
            "source": "probe",
            "tenantId": "0b8f3f0e-6a52-4c1e-8f3e-5d1c2b7a9e40",
            "type": "task.created",
            "taskId": "5d7e1c2a-9b3f-4e6a-8c1d-2f4a6b8c0e19",
            "taskType": "research",
        },
        ("TASK_EVENTS", "api-task-consumer"),
        ("TASK_EVENTS", 1),
    ),
    (
        "aivo",
        [],
        "learning.session.started",
        {"learner_id": "learner-9", "kind": "session"},
        ("LEARNING", "indexer"),
        ("DLQ", 0),
    ),
    (
        "iot_pulse",
        [],
        "routes.tenant-0.probe",
        {
            "route_id": "probe",
            "url": "https://hooks.example.com/probe",
            "reading": {
                "tenant_id": "tenant-0",
                "device_id": "dev-0",
                "ts": 1,
                "metric": "temp_c",
                "value": 21.5,
            },
        },
        ("ROUTES", "route-delivery"),
        ("ROUTES", 0),
    ),
    (
        "observability_agent",
        ["log_agent"],
        "log_agent",
        {"alert_id": "A-9", "service": "checkout", "question": "what does log_agent see?"},
        ("AGENT_TASKS", "log_agent"),
        ("RESPONSES", 1),
    ),
]


@pytest.mark.parametrize("system", [s[0] for s in SERVICES])
async def test_agents_serve_until_sigterm(
    fresh_server: NatsServer, system: str, tmp_path: Path
) -> None:
    if system == "aigentflow":
        pytest.importorskip("pydantic", minversion="2.11")
    _, args, subject, data, (stream, durable), (out_stream, out_count) = next(
        s for s in SERVICES if s[0] == system
    )
    env = {**os.environ, "NATS_URL": fresh_server.url, "NATS_REPLICAS": "1"}
    log = tmp_path / "service.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / system / "agents.py"), "--serve", *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        async with natsbus.connect(fresh_server.url) as bus:
            # The service applies its topology at start-up and consumes what arrives.
            for _ in range(200):
                try:
                    await bus.consumer_info(stream, durable)
                    break
                except (natsbus.StreamNotFoundError, natsbus.ConsumerNotFoundError):
                    await asyncio.sleep(0.05)
            await bus.publish(subject, data)
            for _ in range(200):
                info = await bus.consumer_info(stream, durable)
                if info["ack_floor"]["stream_seq"] >= 1:
                    break
                await asyncio.sleep(0.05)
            assert await consumer_counts(bus, stream, durable) == (0, 0), log.read_text()
            assert info["delivered"]["consumer_seq"] == 1
            assert await message_count(bus, out_stream) == out_count
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert f"stopped worker {stream}/{durable}: handled 1, failed 0" in output, output
