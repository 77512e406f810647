"""aigentflow's messaging module, in Python on natsbus.

What the NestJS ``NatsService``, ``EventPublisherService``,
``EventSubscriberService`` and ``NatsHealthIndicator`` did:

- start-up: connect and ensure the streams (``onModuleInit``);
- publish typed agent, workflow, task and audit events (pydantic models in
  place of the zod schemas, camelCase on the wire so the TypeScript services
  read the same messages);
- subscribe with durable consumers and dispatch to handlers registered per
  event type (``"*"`` for all); a restarted subscriber resumes where the last
  one stopped;
- request/reply (a planner agent answers ``rpc.planner.plan``);
- a health check for the readiness endpoint.

Run: ``python examples/aigentflow/agents.py`` (uses ``$NATS_URL``, or starts
a throwaway nats-server). Needs pydantic >= 2.11.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

import natsbus

TOPOLOGY = Path(__file__).with_name("topology.yaml")
SOURCE = "aigentflow-api"


class BaseMessage(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )

    id: UUID = Field(default_factory=uuid4)
    timestamp: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    source: str = SOURCE
    correlation_id: Optional[UUID] = None
    tenant_id: UUID


class AgentEvent(BaseMessage):
    type: Literal[
        "agent.started", "agent.completed", "agent.failed", "agent.progress", "agent.blocked"
    ]
    agent_id: UUID
    agent_type: str
    payload: dict[str, Any] = {}


class WorkflowEvent(BaseMessage):
    type: Literal[
        "workflow.started",
        "workflow.completed",
        "workflow.failed",
        "workflow.step.started",
        "workflow.step.completed",
    ]
    workflow_id: UUID
    step_id: Optional[str] = None
    payload: dict[str, Any] = {}


class TaskEvent(BaseMessage):
    type: Literal[
        "task.created",
        "task.assigned",
        "task.started",
        "task.completed",
        "task.failed",
        "task.cancelled",
    ]
    task_id: UUID
    task_type: str
    payload: dict[str, Any] = {}


class AuditEvent(BaseMessage):
    type: Literal["audit.access", "audit.mutation", "audit.security", "audit.compliance"]
    action: str
    resource_type: str
    resource_id: str
    user_id: Optional[UUID] = None
    metadata: dict[str, Any] = {}


def subject_for(event: BaseMessage) -> str:
    """agent.<agentType>.<action>, workflow.<action>, task.<taskType>.<action>, audit.<kind>."""
    if isinstance(event, AgentEvent):
        return f"agent.{event.agent_type}.{event.type.split('.', 1)[1]}"
    if isinstance(event, TaskEvent):
        return f"task.{event.task_type}.{event.type.split('.', 1)[1]}"
    if isinstance(event, (WorkflowEvent, AuditEvent)):
        return event.type
    raise TypeError(f"not an event: {event!r}")


async def publish_event(bus: natsbus.Bus, event: BaseMessage) -> natsbus.PubAck:
    # The event id doubles as the msg id: a retried publish is stored once.
    return await bus.publish(subject_for(event), event, msg_id=str(event.id))


Handler = Callable[[Any], Awaitable[None]]
SUBSCRIPTIONS = [  # (stream, durable, model)
    ("AGENT_EVENTS", "api-agent-consumer", AgentEvent),
    ("AGENT_EVENTS", "api-workflow-consumer", WorkflowEvent),
    ("TASK_EVENTS", "api-task-consumer", TaskEvent),
]


class EventSubscriber:
    """Dispatch events from the durable consumers to handlers by event type."""

    def __init__(self) -> None:
        self.handlers: dict[str, list[Handler]] = defaultdict(list)

    def on(self, event_type: str, handler: Handler) -> None:
        self.handlers[event_type].append(handler)

    async def run(self, bus: natsbus.Bus, idle: float = 0.5) -> int:
        """Process every consumer until each has been idle ``idle`` seconds."""
        counts = await asyncio.gather(
            *(self._consume(bus, s, d, m, idle) for s, d, m in SUBSCRIPTIONS)
        )
        return sum(counts)

    async def _consume(
        self, bus: natsbus.Bus, stream: str, durable: str, model: Any, idle: float
    ) -> int:
        handled = 0
        async with bus.consume(stream, durable, model=model) as consumer:
            while (msg := await consumer.next(timeout=idle)) is not None:
                try:
                    event = msg.data
                except natsbus.DecodeError as exc:  # invalid: redelivery cannot help
                    await msg.term(reason=str(exc))
                    continue
                for handler in self.handlers[event.type] + self.handlers["*"]:
                    try:
                        await handler(event)
                    except Exception as exc:  # one failing handler does not block the rest
                        print(f"  handler for {event.type} failed: {exc}")
                await msg.ack()
                handled += 1
        return handled


async def health_check(bus: natsbus.Bus) -> dict[str, Any]:
    """What NatsHealthIndicator reported, for a /health endpoint."""
    health = await bus.health()
    status = "up" if health.ok else "down"
    return {"nats": {"status": status, **health.to_dict()}}


async def main(url: str) -> None:
    tenant = uuid4()
    planner = uuid4()
    seen: list[str] = []

    async def record(event: Any) -> None:
        seen.append(event.type)

    async def page_on_call(event: TaskEvent) -> None:
        print(f"  on-call paged: task {event.task_id} failed")

    subscriber = EventSubscriber()
    subscriber.on("*", record)
    subscriber.on("task.failed", page_on_call)

    async with natsbus.connect(url, name=SOURCE, topology=TOPOLOGY) as bus:
        print(repr(await bus.ensure_streams()))  # onModuleInit
        print(f"health: {(await health_check(bus))['nats']['status']}")

        # A planner agent answering requests (any service in the fleet).
        async def plan(msg: natsbus.Message) -> dict[str, Any]:
            goal = msg.data["goal"]
            return {"steps": [f"research {goal}", f"draft {goal}", "review"]}

        planner_service = await bus.serve("rpc.planner.plan", plan, queue="planner")
        reply = await bus.request("rpc.planner.plan", {"goal": "release notes"}, timeout=5.0)
        print(f"planner replied: {reply.data['steps']}")
        await planner_service.stop()

        workflow = uuid4()
        task = uuid4()
        for event in (
            WorkflowEvent(tenant_id=tenant, type="workflow.started", workflow_id=workflow),
            AgentEvent(
                tenant_id=tenant, type="agent.started", agent_id=planner, agent_type="planner"
            ),
            TaskEvent(tenant_id=tenant, type="task.created", task_id=task, task_type="research"),
            AuditEvent(
                tenant_id=tenant,
                type="audit.mutation",
                action="workflow.start",
                resource_type="workflow",
                resource_id=str(workflow),
            ),
        ):
            ack = await publish_event(bus, event)
            print(f"published {subject_for(event)} -> {ack.stream}#{ack.seq}")

        handled = await asyncio.wait_for(subscriber.run(bus), timeout=10.0)
        print(f"subscriber handled {handled} events")

    # While the API is down (deploy, crash), work goes on elsewhere.
    async with natsbus.connect(url, name="aigentflow-worker", topology=TOPOLOGY) as bus:
        await publish_event(
            bus, TaskEvent(tenant_id=tenant, type="task.failed", task_id=task, task_type="research")
        )
        await publish_event(
            bus,
            AgentEvent(
                tenant_id=tenant, type="agent.failed", agent_id=planner, agent_type="planner"
            ),
        )

    # The restarted API resumes its durable consumers: only the two new events arrive.
    async with natsbus.connect(url, name=SOURCE, topology=TOPOLOGY) as bus:
        await bus.ensure_streams()
        handled = await asyncio.wait_for(subscriber.run(bus), timeout=10.0)
        print(f"after restart the subscriber handled {handled} events")
    print(f"event types seen: {seen}")


if __name__ == "__main__":
    url = os.environ.get("NATS_URL")
    if url:
        asyncio.run(main(url))
    else:
        from natsbus.testing import NatsServer

        with NatsServer() as server:
            asyncio.run(main(server.url))
