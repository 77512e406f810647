"""Agentic platform on natsbus: workflows, event processing, exactly-once commands.

The platform's long-running agents are workers (``bus.worker``), one per
durable consumer of topology.yaml:

- ``workflow-processor`` runs the workflows an orchestrator starts on
  ``workflows.execution.start`` (the WORKFLOWS work queue). A workflow that
  hits a transient error raises; the worker naks it and the server
  redelivers it after the consumer's ``backoff`` step.
- ``event-logger`` and ``notification-dispatcher`` read the two push
  consumers (a ``deliver_subject``): every event of EVENTS, and the
  notifications, which NOTIFICATIONS (interest retention) drops once the
  dispatcher acked them.
- ``command-executor`` runs each command once: an operator sends it twice
  with the same message id, COMMANDS stores it once, and the handler acks it
  with ``ack_sync()`` before it returns, so the server has confirmed it will
  not come back.
- ``log-aggregator`` forwards the LOGS stream.

``event-analytics`` is a batch job, not a service: it reads the metrics that
arrived since its last run (its filter is ``events.metrics.>``) in batches,
averages them and exits once it has caught up.

Run the demo: ``python examples/agentic_platform/agents.py`` (uses
``$NATS_URL``, or starts a throwaway nats-server). Run the agents as a
service until SIGTERM or Ctrl-C: ``python examples/agentic_platform/agents.py
--serve`` (uses ``$NATS_URL``, default ``nats://127.0.0.1:4222``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

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


class ToolNotReady(Exception):
    pass


class Platform:
    """The agents' handlers, and what they did (for the demo to print)."""

    def __init__(self) -> None:
        self.finished: list[str] = []
        self.executed: list[Command] = []
        self.events: collections.Counter[str] = collections.Counter()

    async def run_workflow(self, msg: natsbus.Message[WorkflowRun]) -> None:
        run = msg.data
        if run.attempt_fails and msg.delivered == 1:
            print(f"  {run.workflow_id}: tool not ready, retrying (nak)")
            raise ToolNotReady(f"{run.workflow_id}: tool not ready")  # retried after the backoff
        print(f"  {run.workflow_id}: {run.name} finished (delivery {msg.delivered})")
        self.finished.append(run.workflow_id)  # returning acks it: WORKFLOWS removes it

    async def execute_command(self, msg: natsbus.Message[Command]) -> None:
        command = msg.data
        print(f"  executing {command.action} on {command.target}")
        self.executed.append(command)
        await msg.ack_sync()  # the server confirmed: the command will not come back

    def log_event(self, msg: natsbus.Message[Any]) -> None:
        self.events[msg.subject.split(".")[1]] += 1  # events.<kind>.*

    async def dispatch_notification(self, msg: natsbus.Message[Any]) -> None:
        user = msg.subject.rsplit(".", 1)[-1]  # notifications.user.<id>
        print(f"  notify user {user}: {msg.data['text']}")

    def forward_log(self, msg: natsbus.Message[Any]) -> None:
        print(f"  log [{msg.data['level']}] {msg.data['message']}")  # to Loki, say

    def workers(self, bus: natsbus.Bus) -> list[natsbus.Worker[Any]]:
        return [
            bus.worker("WORKFLOWS", "workflow-processor", self.run_workflow, model=WorkflowRun),
            bus.worker("EVENTS", "event-logger", self.log_event),  # push
            bus.worker("COMMANDS", "command-executor", self.execute_command, model=Command),
            bus.worker("NOTIFICATIONS", "notification-dispatcher", self.dispatch_notification),
            bus.worker("LOGS", "log-aggregator", self.forward_log),
        ]


async def event_analytics(bus: natsbus.Bus) -> dict[str, float]:
    """The batch job: average the metrics that arrived since its last run, 100 at a time."""
    if (await bus.consumer_info("EVENTS", "event-analytics"))["num_pending"] == 0:
        return {}  # nothing new
    values: dict[str, list[float]] = collections.defaultdict(list)
    async with bus.consume("EVENTS", "event-analytics", model=Metric) as consumer:
        async for batch in consumer.batches(max_messages=100, timeout=0.2):
            for msg in batch:
                values[msg.data.name].append(msg.data.value)
                await msg.ack()
            print(f"  analytics: batch of {len(batch)}")
            if batch[-1].pending == 0:
                break  # caught up
    return {name: statistics.mean(v) for name, v in values.items()}


async def agent_main(url: Optional[str] = None) -> None:
    """The platform's agents: run until SIGTERM or SIGINT, then stop gracefully."""
    async with natsbus.connect(url, name="agentic-platform", topology=TOPOLOGY, wait=30) as bus:
        await bus.ensure_streams(create_only=True)
        await natsbus.run(*Platform().workers(bus))


async def settled(bus: natsbus.Bus, running: Sequence[natsbus.Worker[Any]]) -> None:
    """Return once no consumer of ``running`` has a message left to deliver or settle."""
    while True:
        infos = [await bus.consumer_info(w.stream, w.durable) for w in running]
        if all(i["num_pending"] == 0 and i["num_ack_pending"] == 0 for i in infos):
            return
        await asyncio.sleep(0.05)


async def main(url: str) -> None:
    async with natsbus.connect(url, name="agentic-platform", topology=TOPOLOGY) as bus:
        print(await bus.ensure_streams())

        # The agents, as agent_main runs them; stopped at the end of the block.
        platform = Platform()
        running = platform.workers(bus)
        workflows, logger, commands, dispatcher, logs = running
        async with contextlib.AsyncExitStack() as stack:
            for worker in running:
                await stack.enter_async_context(worker)

            print("workflows:")
            await bus.publish_many(
                [
                    ("workflows.execution.start", WorkflowRun("wf-1", "summarize-ticket")),
                    ("workflows.execution.start", WorkflowRun("wf-2", "triage-alert", True)),
                    ("workflows.execution.start", WorkflowRun("wf-3", "draft-reply")),
                ]
            )
            await asyncio.wait_for(settled(bus, [workflows]), timeout=10.0)

            print("events:")
            metrics = [
                (f"events.metrics.{name}", Metric(f"agent-{i % 3}", name, value))
                for i in range(120)
                for name, value in (("cpu", 40.0 + i % 10), ("tokens", 1000.0 + i))
            ]
            await bus.publish_many(metrics)
            await bus.publish("events.agent.started", {"agent": "agent-0"})  # not a metric
            averages = await asyncio.wait_for(event_analytics(bus), timeout=10.0)
            print(f"  averages: {averages}")
            await asyncio.wait_for(settled(bus, [logger]), timeout=10.0)
            print(f"  event-logger: {sum(platform.events.values())} events {dict(platform.events)}")

            print("commands:")
            restart = Command("cmd-7", "agent-2", "restart")
            for _ in range(2):  # e.g. an operator's retry after a timeout
                ack = await bus.publish(
                    "commands.agent.restart", restart, msg_id=restart.command_id
                )
                print(f"  sent {restart.command_id}: seq={ack.seq} duplicate={ack.duplicate}")
            await asyncio.wait_for(settled(bus, [commands]), timeout=10.0)

            print("notifications and logs:")
            await bus.publish("notifications.user.42", {"text": "workflow wf-2 finished"})
            await bus.publish("logs.app.info", {"level": "info", "message": "demo finished"})
            await asyncio.wait_for(settled(bus, [dispatcher, logs]), timeout=10.0)
        for worker in running:
            print(f"{worker.durable}: handled {worker.handled}, failed {worker.failed}")


class OneLine(logging.Formatter):
    """Log records without their tracebacks: the demo's failures are on purpose."""

    def formatException(self, ei: Any) -> str:
        return ""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--serve", action="store_true", help="run the agents on $NATS_URL until SIGTERM"
    )
    serve = parser.parse_args().serve
    # natsbus logs each retry, rejection and dead letter (logger natsbus.worker).
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        if serve
        else OneLine("    log: %(message)s")
    )
    logging.basicConfig(level=logging.INFO if serve else logging.WARNING, handlers=[handler])
    if serve:
        asyncio.run(agent_main())
    elif url := os.environ.get("NATS_URL"):
        asyncio.run(main(url))
    else:
        from natsbus.testing import NatsServer

        with NatsServer() as server:
            asyncio.run(main(server.url))
