"""Observability agent on natsbus: one alert, investigated end to end.

1. A monitoring system publishes an alert to ``alerts.<kind>`` (stream ALERTS).
2. The orchestrator's alert worker reads it through its durable consumer and
   hands one task to each specialist agent (stream AGENT_TASKS, one subject
   per agent).
3. The metric, log, deployment and tracing agents are workers on their own
   durable consumers, typed with dataclasses; each answers on
   ``orchestrator_response`` (stream RESPONSES).
4. Once every specialist answered, the orchestrator's response worker asks
   the root-cause agent for a verdict (request/reply, the reply typed with
   ``model=RootCause``); the root-cause agent also records it on
   ``root_cause_result``.
5. The orchestrator notifies on-call (stream NOTIFICATIONS).

Each handler publishes what it produced before it returns (the worker then
acks), with a msg id, so a crash in between redelivers the message and the
stream drops the repeated output. Every agent is its own connection here, as
it would be its own process, and each calls ``ensure_streams()`` at start-up
instead of an init job.

Run the demo: ``python examples/observability_agent/agents.py`` (uses
``$NATS_URL``, or starts a throwaway nats-server). Run one agent, as its own
process, until SIGTERM or Ctrl-C: ``python examples/observability_agent/agents.py
--serve metric_agent`` (or ``orchestrator``, ``root_cause_agent``, any
specialist; uses ``$NATS_URL``, default ``nats://127.0.0.1:4222``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

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


def specialist(bus: natsbus.Bus, name: str) -> natsbus.Worker[AgentTask]:
    """A specialist agent: answer every task on its own subject."""

    async def answer(msg: natsbus.Message[AgentTask]) -> None:
        task = msg.data
        finding = AgentResponse(task.alert_id, name, FINDINGS[name])
        # msg_id: a redelivered task does not store a second answer.
        await bus.publish("orchestrator_response", finding, msg_id=f"{task.alert_id}/{name}")
        print(f"  {name}: {finding.finding}")

    return bus.worker("AGENT_TASKS", name, answer, model=AgentTask)


async def root_cause_agent(bus: natsbus.Bus, msg: natsbus.Message[Any]) -> RootCause:
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


class Orchestrator:
    """Two workers: one fans each alert out to the specialists, one collects their
    findings and, once all are in, gets the verdict and notifies on-call.

    The alerts under investigation and their findings are kept in memory (an
    orchestrator restarted mid-investigation would read them back from ALERTS
    and RESPONSES).
    """

    def __init__(self, bus: natsbus.Bus) -> None:
        self.bus = bus
        self.alerts: dict[str, Alert] = {}
        self.findings: dict[str, dict[str, AgentResponse]] = defaultdict(dict)
        self.verdicts: dict[str, RootCause] = {}

    async def on_alert(self, msg: natsbus.Message[Alert]) -> None:
        alert = msg.data
        print(f"orchestrator: alert {alert.alert_id} [{alert.severity}] {alert.summary}")
        self.alerts[alert.alert_id] = alert
        await self.bus.publish_many(
            (
                agent,
                AgentTask(alert.alert_id, alert.service, f"what does {agent} see?"),
                {"Nats-Msg-Id": f"{alert.alert_id}/{agent}"},
            )
            for agent in SPECIALISTS
        )

    async def on_response(self, msg: natsbus.Message[AgentResponse]) -> None:
        finding = msg.data
        findings = self.findings[finding.alert_id]
        findings[finding.agent] = finding
        if len(findings) < len(SPECIALISTS) or finding.alert_id in self.verdicts:
            return
        alert = self.alerts[finding.alert_id]
        # A failure here (no root-cause agent, a ServiceError) raises: the worker
        # naks this answer and the request is made again on its redelivery.
        reply = await self.bus.request(
            RCA_SUBJECT,
            {"alert_id": alert.alert_id, "findings": list(findings.values())},
            timeout=5.0,
            model=RootCause,
        )
        verdict = reply.data
        print(f"orchestrator: root cause {verdict.cause!r} (confidence {verdict.confidence})")
        await self.bus.publish(
            "notifications.oncall",
            {"alert_id": alert.alert_id, "text": f"{alert.service}: {verdict.cause}"},
            msg_id=f"notify/{alert.alert_id}",
        )
        self.verdicts[alert.alert_id] = verdict

    def workers(self) -> list[natsbus.Worker[Any]]:
        return [
            self.bus.worker("ALERTS", "orchestrator", self.on_alert, model=Alert),
            self.bus.worker("RESPONSES", "orchestrator", self.on_response, model=AgentResponse),
        ]


AGENTS = ("orchestrator", "root_cause_agent", *SPECIALISTS)


async def agent_main(name: str, url: Optional[str] = None) -> None:
    """Run one agent (as its own process) until SIGTERM or SIGINT, then stop gracefully."""
    async with natsbus.connect(url, name=name, topology=TOPOLOGY, wait=30) as bus:
        await bus.ensure_streams(create_only=True)
        if name == "orchestrator":
            await natsbus.run(*Orchestrator(bus).workers())
        elif name == "root_cause_agent":
            rca = await bus.serve(
                RCA_SUBJECT, lambda msg: root_cause_agent(bus, msg), queue="root_cause_agent"
            )
            await natsbus.run(rca)
        else:
            await natsbus.run(specialist(bus, name))


async def main(url: str) -> None:
    async with natsbus.connect(url, name="orchestrator", topology=TOPOLOGY) as bus:
        plan = await bus.ensure_streams()
        print(f"topology: {plan!r}")

        # Every agent, as agent_main runs it; leaving the block stops them all
        # (the orchestrator first, the specialists last), as on SIGTERM.
        async with contextlib.AsyncExitStack() as stack:
            for name in SPECIALISTS:
                agent_bus = await stack.enter_async_context(
                    natsbus.connect(url, name=name, topology=TOPOLOGY)
                )
                await agent_bus.ensure_streams(create_only=True)
                await stack.enter_async_context(specialist(agent_bus, name))
            rca_bus = await stack.enter_async_context(natsbus.connect(url, name="root_cause_agent"))
            rca = await rca_bus.serve(
                RCA_SUBJECT, lambda msg: root_cause_agent(rca_bus, msg), queue="root_cause_agent"
            )
            stack.push_async_callback(rca.stop)
            orchestrator = Orchestrator(bus)
            for worker in orchestrator.workers():
                await stack.enter_async_context(worker)

            # What Alertmanager's webhook bridge would publish.
            alert = Alert("A-1042", "payment-service", "critical", "p99 latency > 2s")
            await bus.publish("alerts.latency", alert, msg_id=alert.alert_id)

            async def verdict() -> RootCause:
                while alert.alert_id not in orchestrator.verdicts:
                    await asyncio.sleep(0.02)
                return orchestrator.verdicts[alert.alert_id]

            await asyncio.wait_for(verdict(), timeout=20.0)


class OneLine(logging.Formatter):
    """Log records without their tracebacks: the demo's failures are on purpose."""

    def formatException(self, ei: Any) -> str:
        return ""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--serve", metavar="AGENT", choices=AGENTS, help=f"run one agent: {', '.join(AGENTS)}"
    )
    serve = parser.parse_args().serve
    # natsbus logs each retry and rejection (logger natsbus.worker).
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        if serve
        else OneLine("    log: %(message)s")
    )
    logging.basicConfig(level=logging.INFO if serve else logging.WARNING, handlers=[handler])
    if serve:
        asyncio.run(agent_main(serve))
    elif url := os.environ.get("NATS_URL"):
        asyncio.run(main(url))
    else:
        from natsbus.testing import NatsServer

        with NatsServer() as server:
            asyncio.run(main(server.url))
