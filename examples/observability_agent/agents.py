"""Observability agent on natsbus: one alert, investigated end to end.

1. A monitoring system publishes an alert to ``alerts.<kind>`` (stream ALERTS).
2. The orchestrator reads it through its durable consumer and hands one task
   to each specialist agent (stream AGENT_TASKS, one subject per agent).
3. The metric, log, deployment and tracing agents read their tasks through
   durable consumers, typed with dataclasses, and answer on
   ``orchestrator_response`` (stream RESPONSES).
4. The orchestrator asks the root-cause agent for a verdict (request/reply);
   the root-cause agent also records it on ``root_cause_result``.
5. The orchestrator notifies on-call (stream NOTIFICATIONS).

Every agent is its own connection here, as it would be its own process, and
each calls ``ensure_streams()`` at start-up instead of an init job.

Run: ``python examples/observability_agent/agents.py`` (uses ``$NATS_URL``, or
starts a throwaway nats-server).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import natsbus

TOPOLOGY = Path(__file__).with_name("topology.yaml")
SPECIALISTS = ("metric_agent", "log_agent", "deployment_agent", "tracing_agent")

# Request/reply needs a subject no stream captures. root_cause_analysis would
# not do: ROOT_CAUSE stores it, and a stream answers every request on its
# subjects with a PubAck, so the caller would get {"stream": "ROOT_CAUSE", ...}
# back instead of the agent's verdict.
RCA_SUBJECT = "rpc.root_cause_analysis"


@dataclasses.dataclass
class Alert:
    alert_id: str
    service: str
    severity: str
    summary: str


@dataclasses.dataclass
class AgentTask:
    alert_id: str
    service: str
    question: str


@dataclasses.dataclass
class AgentResponse:
    alert_id: str
    agent: str
    finding: str


@dataclasses.dataclass
class RootCause:
    alert_id: str
    cause: str
    confidence: float
    evidence: list[str]


# What each specialist "finds" (a real agent would query Prometheus, Loki, ...).
FINDINGS = {
    "metric_agent": "p99 latency 8x since 14:02, memory at limit",
    "log_agent": "212 OutOfMemoryError in payment-worker since 14:01",
    "deployment_agent": "payment-service v2.4.1 rolled out at 14:00",
    "tracing_agent": "slow spans in ledger.write after 14:00",
}


async def specialist(url: str, name: str) -> None:
    """A specialist agent: answer every task on its own subject until cancelled."""
    async with natsbus.connect(url, name=name, topology=TOPOLOGY) as bus:
        await bus.ensure_streams()
        async with bus.consume("AGENT_TASKS", name, model=AgentTask) as tasks:
            async for msg in tasks:
                task: AgentTask = msg.data
                answer = AgentResponse(task.alert_id, name, FINDINGS[name])
                # msg_id: a redelivered task does not store a second answer.
                await bus.publish("orchestrator_response", answer, msg_id=f"{task.alert_id}/{name}")
                await msg.ack()
                print(f"  {name}: {answer.finding}")


async def root_cause_agent(bus: natsbus.Bus, msg: natsbus.Message) -> RootCause:
    """Serve RCA requests: weigh the findings, record and return the verdict."""
    request = msg.data
    evidence = [f["finding"] for f in request["findings"]]
    deploy = next((e for e in evidence if "rolled out" in e), None)
    verdict = RootCause(
        alert_id=request["alert_id"],
        cause=f"bad deploy ({deploy})" if deploy else "unknown",
        confidence=0.9 if deploy else 0.2,
        evidence=evidence,
    )
    await bus.publish("root_cause_result", verdict, msg_id=f"rca/{verdict.alert_id}")
    return verdict


async def orchestrator(bus: natsbus.Bus) -> RootCause:
    async with bus.consume("ALERTS", "orchestrator", model=Alert) as alerts:
        msg = await alerts.next(timeout=5.0)
        if msg is None:
            raise RuntimeError("no alert arrived")
        alert: Alert = msg.data
        print(f"orchestrator: alert {alert.alert_id} [{alert.severity}] {alert.summary}")
        await bus.publish_many(
            (agent, AgentTask(alert.alert_id, alert.service, f"what does {agent} see?"))
            for agent in SPECIALISTS
        )
        await msg.ack()

    findings: list[AgentResponse] = []
    async with bus.consume("RESPONSES", "orchestrator", model=AgentResponse) as responses:
        while len(findings) < len(SPECIALISTS):
            reply = await responses.next(timeout=5.0)
            if reply is None:
                raise RuntimeError(f"only {len(findings)} agents answered")
            findings.append(reply.data)
            await reply.ack()

    answer = await bus.request(
        RCA_SUBJECT, {"alert_id": alert.alert_id, "findings": findings}, timeout=5.0
    )
    verdict = RootCause(**answer.data)
    print(f"orchestrator: root cause {verdict.cause!r} (confidence {verdict.confidence})")
    await bus.publish(
        "notifications.oncall",
        {"alert_id": alert.alert_id, "text": f"{alert.service}: {verdict.cause}"},
    )
    return verdict


async def main(url: str) -> None:
    async with natsbus.connect(url, name="orchestrator", topology=TOPOLOGY) as bus:
        plan = await bus.ensure_streams()
        print(f"topology: {plan!r}")

        agents = [asyncio.create_task(specialist(url, name)) for name in SPECIALISTS]
        async with natsbus.connect(url, name="root_cause_agent") as rca_bus:
            rca = await rca_bus.serve(
                RCA_SUBJECT, lambda msg: root_cause_agent(rca_bus, msg), queue="root_cause_agent"
            )
            try:
                # What Alertmanager's webhook bridge would publish.
                alert = Alert("A-1042", "payment-service", "critical", "p99 latency > 2s")
                await bus.publish("alerts.latency", alert, msg_id=alert.alert_id)
                await asyncio.wait_for(orchestrator(bus), timeout=20.0)
            finally:
                await rca.stop()
                for agent in agents:  # shutdown, as on SIGTERM
                    agent.cancel()
                await asyncio.gather(*agents, return_exceptions=True)


if __name__ == "__main__":
    url = os.environ.get("NATS_URL")
    if url:
        asyncio.run(main(url))
    else:
        from natsbus.testing import NatsServer

        with NatsServer() as server:
            asyncio.run(main(server.url))
