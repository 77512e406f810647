"""aigentflow's messaging module, in Python on natsbus.

What the NestJS ``NatsService``, ``EventPublisherService``,
``EventSubscriberService`` and ``NatsHealthIndicator`` did, and the step's
"message persistence and replay":

- start-up: connect and ensure the streams (``onModuleInit``);
- publish typed agent, workflow, task and audit events (pydantic models in
  place of the zod schemas, camelCase on the wire so the TypeScript services
  read the same messages);
- subscribe with durable consumers: one worker (``bus.worker``) per consumer
  dispatches each event to the handlers registered for its type (``"*"`` for
  all); a payload that does not decode is terminated, an unexpected error
  retried with a delay (up to the consumer's ``max_deliver``), and a
  restarted service resumes where the last one stopped;
- replay: the dashboard's status board lives in memory and is rebuilt from
  AGENT_EVENTS (``bus.replay`` from the sequence after its last snapshot),
  compliance tooling reads the audit trail since a point in time
  (``start_time``), and one stored event is read with ``bus.get_message``;
- request/reply: a planner agent answers ``rpc.planner.plan``; the caller
  gets the reply typed (``request(..., model=Plan)``), and a failing planner
  raises ``natsbus.ServiceError``;
- a health check for the readiness endpoint.

Run the demo: ``python examples/aigentflow/agents.py`` (uses ``$NATS_URL``, or
starts a throwaway nats-server). Run the API's messaging (the subscriber's
workers and the planner service) until SIGTERM or Ctrl-C: ``python
examples/aigentflow/agents.py --serve`` (uses ``$NATS_URL``, default
``nats://127.0.0.1:4222``). Needs pydantic >= 2.11.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
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
    """EventSubscriberService: dispatch the durable consumers' events to handlers by type."""

    def __init__(self) -> None:
        self.handlers: dict[str, list[Handler]] = defaultdict(list)

    def on(self, event_type: str, handler: Handler) -> None:
        self.handlers[event_type].append(handler)

    async def dispatch(self, msg: natsbus.Message[Any]) -> None:
        event = msg.data  # typed by the worker's model; one that does not decode is termed
        for handler in self.handlers[event.type] + self.handlers["*"]:
            try:
                await handler(event)
            except Exception as exc:  # one failing handler does not block the rest
                print(f"  handler for {event.type} failed: {exc}")
        # Returning acks the event.

    def workers(self, bus: natsbus.Bus) -> list[natsbus.Worker[Any]]:
        return [bus.worker(s, d, self.dispatch, model=m) for s, d, m in SUBSCRIPTIONS]


# AGENT_EVENTS holds both agent and workflow events; their "type" tells them apart.
AgentStreamEvent = TypeAdapter(
    Annotated[Union[AgentEvent, WorkflowEvent], Field(discriminator="type")]
)


class StatusBoard:
    """The dashboard's view of agents and workflows, built from AGENT_EVENTS.

    It is kept in memory and rebuilt by replaying the stream (an ordered,
    ephemeral consumer: nothing to ack, nothing left on the server); ``seq``
    is the last stream sequence applied, so a board restored from a snapshot
    replays only what came after it.
    """

    def __init__(self, snapshot: Optional[dict[str, Any]] = None) -> None:
        snapshot = snapshot or {}
        self.seq: int = snapshot.get("seq", 0)
        self.agents: dict[str, str] = dict(snapshot.get("agents", {}))
        self.workflows: dict[str, str] = dict(snapshot.get("workflows", {}))

    def snapshot(self) -> dict[str, Any]:
        """What a real board would save (to Redis, say) before it goes away."""
        return {"seq": self.seq, "agents": dict(self.agents), "workflows": dict(self.workflows)}

    async def catch_up(self, bus: natsbus.Bus) -> int:
        """Apply what AGENT_EVENTS stored after ``seq``; returns how many events that was."""
        applied = 0
        history = bus.replay(
            "AGENT_EVENTS", start_seq=self.seq + 1, model=AgentStreamEvent.validate_python
        )
        async with history:
            async for msg in history:  # in stream order; ends at the stream's last message
                event = msg.data
                if isinstance(event, AgentEvent):
                    self.agents[f"{event.agent_type} {event.agent_id}"] = event.type
                else:
                    self.workflows[str(event.workflow_id)] = event.type
                self.seq = msg.seq
                applied += 1
        return applied

    def __str__(self) -> str:
        agents = ", ".join(f"{a.split()[0]} {s.split('.')[1]}" for a, s in self.agents.items())
        flows = ", ".join(s.split(".", 1)[1] for s in self.workflows.values())
        return f"agents: {agents or '-'}; workflows: {flows or '-'} (up to AGENT_EVENTS#{self.seq})"


class PlanRequest(BaseModel):
    goal: str


class Plan(BaseModel):
    steps: list[str]


def plan(msg: natsbus.Message[Any]) -> Plan:
    """The planner agent's service; an exception replies with a service error."""
    goal = PlanRequest.model_validate(msg.data).goal
    if not goal.strip():
        raise ValueError("a plan needs a goal")
    return Plan(steps=[f"research {goal}", f"draft {goal}", "review"])


async def health_check(bus: natsbus.Bus) -> dict[str, Any]:
    """What NatsHealthIndicator reported, for a /health endpoint."""
    health = await bus.health()
    status = "up" if health.ok else "down"
    return {"nats": {"status": status, **health.to_dict()}}


def api_subscriber(seen: list[str]) -> EventSubscriber:
    """The API's handlers: record every event, page on-call when a task fails."""

    async def record(event: Any) -> None:
        seen.append(event.type)

    async def page_on_call(event: TaskEvent) -> None:
        print(f"  on-call paged: task {event.task_id} failed")

    subscriber = EventSubscriber()
    subscriber.on("*", record)
    subscriber.on("task.failed", page_on_call)
    return subscriber


async def agent_main(url: Optional[str] = None) -> None:
    """The API's messaging and the planner: serve until SIGTERM or SIGINT, then stop."""
    async with natsbus.connect(url, name=SOURCE, topology=TOPOLOGY, wait=30) as bus:
        await bus.ensure_streams(create_only=True)  # onModuleInit
        planner = await bus.serve("rpc.planner.plan", plan, queue="planner")
        await natsbus.run(*api_subscriber([]).workers(bus), planner)


async def settled(bus: natsbus.Bus, running: Sequence[natsbus.Worker[Any]]) -> None:
    """Return once no consumer of ``running`` has a message left to deliver or settle."""
    while True:
        infos = [await bus.consumer_info(w.stream, w.durable) for w in running]
        if all(i["num_pending"] == 0 and i["num_ack_pending"] == 0 for i in infos):
            return
        await asyncio.sleep(0.05)


async def run_subscriber(bus: natsbus.Bus, subscriber: EventSubscriber) -> int:
    """Run the subscriber's workers until they have handled what is there; how many."""
    running = subscriber.workers(bus)
    async with contextlib.AsyncExitStack() as stack:
        for worker in running:
            await stack.enter_async_context(worker)
        await asyncio.wait_for(settled(bus, running), timeout=10.0)
    return sum(w.handled for w in running)


async def main(url: str) -> None:
    started = datetime.now(timezone.utc)
    tenant = uuid4()
    planner = uuid4()
    seen: list[str] = []

    async with natsbus.connect(url, name=SOURCE, topology=TOPOLOGY) as bus:
        print(repr(await bus.ensure_streams()))  # onModuleInit
        print(f"health: {(await health_check(bus))['nats']['status']}")

        # A planner agent answering requests (any service in the fleet).
        async with await bus.serve("rpc.planner.plan", plan, queue="planner"):
            reply = await bus.request(
                "rpc.planner.plan", PlanRequest(goal="release notes"), model=Plan
            )
            print(f"planner replied: {reply.data.steps}")
            try:
                await bus.request("rpc.planner.plan", PlanRequest(goal=" "), model=Plan)
            except natsbus.ServiceError as exc:
                print(f"planner refused: {exc.code} {exc.description}")

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

        handled = await run_subscriber(bus, api_subscriber(seen))
        print(f"subscriber handled {handled} events")
        board = StatusBoard()
        await board.catch_up(bus)
        print(f"dashboard: {board}")
        snapshot = board.snapshot()

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

    # The restarted API: the board comes back from its snapshot and replays what
    # came after it; the durable consumers resume, so only the two new events arrive.
    async with natsbus.connect(url, name=SOURCE, topology=TOPOLOGY, wait=30) as bus:
        await bus.ensure_streams(create_only=True)
        board = StatusBoard(snapshot)
        replayed = await board.catch_up(bus)
        print(
            f"dashboard restored from its snapshot (AGENT_EVENTS#{snapshot['seq']}), "
            f"replayed {replayed} newer event(s)"
        )
        print(f"dashboard: {board}")
        handled = await run_subscriber(bus, api_subscriber(seen))
        print(f"after restart the subscriber handled {handled} events")

        # One stored event: the planner's latest, whatever its action.
        last = await bus.get_message(
            "AGENT_EVENTS", last_for_subject="agent.planner.>", model=AgentEvent
        )
        print(f"planner's last event: {last.data.type} ({last.stream}#{last.seq})")

        # Compliance tooling: the audit trail since the demo started.
        async with bus.replay("AUDIT_EVENTS", start_time=started, model=AuditEvent) as trail:
            async for msg in trail:
                audit = msg.data
                print(
                    f"audit #{msg.seq}: {audit.type} {audit.action} on "
                    f"{audit.resource_type} {audit.resource_id}"
                )
    print(f"event types seen: {seen}")


class OneLine(logging.Formatter):
    """Log records without their tracebacks: the demo's failures are on purpose."""

    def formatException(self, ei: Any) -> str:
        return ""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--serve", action="store_true", help="run the API's messaging on $NATS_URL until SIGTERM"
    )
    serve = parser.parse_args().serve
    # natsbus logs each retry, rejection and failed request (loggers natsbus.*).
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
