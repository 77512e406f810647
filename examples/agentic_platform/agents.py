"""Agentic platform on natsbus: workflows, batch analytics, exactly-once commands.

- An orchestrator starts workflows on ``workflows.execution.start``; the
  ``workflow-processor`` agents take them from the WORKFLOWS work queue, ack
  what they finished and nak what hit a transient error, so it is retried.
- Agents report metrics on ``events.metrics.*``; ``event-analytics`` reads
  them from EVENTS in batches (other events are not in its filter).
- An operator sends a command twice with the same message id; COMMANDS
  stores it once and ``command-executor`` runs it once.
- A notification waits in NOTIFICATIONS for the push dispatcher.

Run: ``python examples/agentic_platform/agents.py`` (uses ``$NATS_URL``, or
starts a throwaway nats-server).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
from collections import defaultdict
from pathlib import Path

import natsbus

TOPOLOGY = Path(__file__).with_name("topology.yaml")


@dataclasses.dataclass
class WorkflowRun:
    workflow_id: str
    name: str
    attempt_fails: bool = False  # demo switch: the first attempt hits a transient error


@dataclasses.dataclass
class Metric:
    agent: str
    name: str
    value: float


@dataclasses.dataclass
class Command:
    command_id: str
    target: str
    action: str


async def workflow_processor(bus: natsbus.Bus, expected: int) -> list[str]:
    """Run workflows from the work queue; each is removed from WORKFLOWS once acked."""
    done: list[str] = []
    async with bus.consume("WORKFLOWS", "workflow-processor", model=WorkflowRun) as runs:
        async for msg in runs:
            run: WorkflowRun = msg.data
            if run.attempt_fails and msg.delivered == 1:
                print(f"  {run.workflow_id}: tool not ready, retrying (nak)")
                await msg.nak(delay=0.2)  # redelivered after 200ms, delivered == 2
                continue
            print(f"  {run.workflow_id}: {run.name} finished (delivery {msg.delivered})")
            await msg.ack()
            done.append(run.workflow_id)
            if len(done) == expected:
                return done
    return done


async def event_analytics(bus: natsbus.Bus, expected: int) -> dict[str, float]:
    """Average every metric, reading EVENTS in batches of up to 100."""
    values: dict[str, list[float]] = defaultdict(list)
    seen = 0
    async with bus.consume("EVENTS", "event-analytics", model=Metric) as consumer:
        async for batch in consumer.batches(max_messages=100, timeout=0.2):
            for msg in batch:
                values[msg.data.name].append(msg.data.value)
                await msg.ack()
            seen += len(batch)
            print(f"  analytics: batch of {len(batch)}")
            if seen >= expected:
                break
    return {name: statistics.mean(v) for name, v in values.items()}


async def command_executor(bus: natsbus.Bus) -> Command:
    async with bus.consume("COMMANDS", "command-executor", model=Command) as commands:
        msg = await commands.next(timeout=5.0)
        if msg is None:
            raise RuntimeError("no command arrived")
        command: Command = msg.data
        print(f"  executing {command.action} on {command.target}")
        await msg.ack_sync()  # the server confirmed: the command will not come back
        return command


async def main(url: str) -> None:
    async with natsbus.connect(url, name="agentic-platform", topology=TOPOLOGY) as bus:
        print(await bus.ensure_streams())

        print("workflows:")
        await bus.publish_many(
            [
                ("workflows.execution.start", WorkflowRun("wf-1", "summarize-ticket")),
                ("workflows.execution.start", WorkflowRun("wf-2", "triage-alert", True)),
                ("workflows.execution.start", WorkflowRun("wf-3", "draft-reply")),
            ]
        )
        await asyncio.wait_for(workflow_processor(bus, expected=3), timeout=10.0)

        print("events:")
        metrics = [
            (f"events.metrics.{name}", Metric(f"agent-{i % 3}", name, value))
            for i in range(120)
            for name, value in (("cpu", 40.0 + i % 10), ("tokens", 1000.0 + i))
        ]
        await bus.publish_many(metrics)
        await bus.publish("events.agent.started", {"agent": "agent-0"})  # not a metric
        averages = await asyncio.wait_for(event_analytics(bus, len(metrics)), timeout=10.0)
        print(f"  averages: {averages}")

        print("commands:")
        restart = Command("cmd-7", "agent-2", "restart")
        for _ in range(2):  # e.g. an operator's retry after a timeout
            ack = await bus.publish("commands.agent.restart", restart, msg_id=restart.command_id)
            print(f"  sent {restart.command_id}: seq={ack.seq} duplicate={ack.duplicate}")
        await command_executor(bus)

        await bus.publish("notifications.user.42", {"text": "workflow wf-2 finished"})
        await bus.publish("logs.app.info", {"level": "info", "message": "demo finished"})


if __name__ == "__main__":
    url = os.environ.get("NATS_URL")
    if url:
        asyncio.run(main(url))
    else:
        from natsbus.testing import NatsServer

        with NatsServer() as server:
            asyncio.run(main(server.url))
