"""AIVO on natsbus: events into Postgres via the indexer, with a dead-letter queue.

- Services publish learning, focus, homework and recommendation events.
- The indexer service runs one worker per stream on its ``indexer`` consumer
  and writes each event to the ``events`` table (a dict here). A write that
  fails raises (the indexer cannot tell a lasting database error from a
  passing one, a deadlock or a failover, so it retries them all): the worker
  naks the event, and the server redelivers it after the consumer's
  ``backoff`` step. When the write fails on the last allowed delivery
  (``max_deliver: 5``), the worker dead-letters the event to ``dlq.<stream>``
  (the consumer's ``dead_letter:`` in topology.yaml): the DLQ stream stores
  it unchanged, with ``Natsbus-Dead-Letter-*`` headers saying where it came
  from and why, and the original is terminated. A payload that does not
  decode into ``Event`` is dead-lettered at once.
- The analytics service counts LEARNING and FOCUS events per subject (a sync
  handler: the worker runs it in a thread).
- Finally the demo lists the DLQ with ``bus.dead_letters("DLQ")``, what
  ``natsbus dead-letters DLQ`` prints.

Everything runs on a 3-node cluster with every stream replicated 3 times.

Run the demo: ``python examples/aivo/agents.py`` (uses ``$NATS_URL``, or
starts a throwaway 3-node cluster). Run the indexer and analytics services
until SIGTERM or Ctrl-C: ``python examples/aivo/agents.py --serve`` (uses
``$NATS_URL``, default ``nats://127.0.0.1:4222``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import natsbus

TOPOLOGY = Path(__file__).with_name("topology.yaml")
INDEXED_STREAMS = ("LEARNING", "FOCUS", "HOMEWORK", "RECOMMENDATION")
ANALYZED_STREAMS = ("LEARNING", "FOCUS")


@dataclasses.dataclass
class Event:
    learner_id: str
    kind: str
    duration_ms: int = 0


class RejectedByDatabase(Exception):
    pass


class Indexer:
    """The indexer's handler: write the event to Postgres; raising means "retry later"."""

    def __init__(self) -> None:
        self.table: dict[str, Event] = {}  # stands in for the `events` table

    async def __call__(self, msg: natsbus.Message[Event]) -> None:
        event = msg.data  # an Event: a payload that does not decode never gets here
        # INSERT INTO events ...; the CHECK constraint rejects negative durations.
        if event.duration_ms < 0:
            raise RejectedByDatabase("violates check constraint events_duration_ms_check")
        self.table[f"{msg.stream}:{msg.seq}"] = event
        # Returning acks the event.


class Analytics:
    """The analytics handler: count events per subject for the dashboards."""

    def __init__(self) -> None:
        self.counts = {stream: collections.Counter[str]() for stream in ANALYZED_STREAMS}

    def __call__(self, msg: natsbus.Message[Any]) -> None:
        assert msg.stream is not None
        self.counts[msg.stream][msg.subject] += 1


def workers(bus: natsbus.Bus, indexer: Indexer, analytics: Analytics) -> list[natsbus.Worker[Any]]:
    """The indexer's worker on every stream and the analytics' on LEARNING and FOCUS."""
    return [
        *(bus.worker(s, "indexer", indexer, model=Event, concurrency=4) for s in INDEXED_STREAMS),
        *(bus.worker(s, "analytics", analytics) for s in ANALYZED_STREAMS),
    ]


async def agent_main(url: Optional[str] = None) -> None:
    """The indexer and analytics services: run until SIGTERM or SIGINT, then stop gracefully."""
    async with natsbus.connect(url, name="aivo-indexer", topology=TOPOLOGY, wait=30) as bus:
        await bus.ensure_streams(create_only=True)
        await natsbus.run(*workers(bus, Indexer(), Analytics()))


async def settled(bus: natsbus.Bus, running: Sequence[natsbus.Worker[Any]]) -> None:
    """Return once no consumer of ``running`` has a message left to deliver or settle."""
    while True:
        infos = [await bus.consumer_info(w.stream, w.durable) for w in running]
        if all(i["num_pending"] == 0 and i["num_ack_pending"] == 0 for i in infos):
            return
        await asyncio.sleep(0.05)


async def main(url: str) -> None:
    async with natsbus.connect(url, name="aivo-demo", topology=TOPOLOGY) as bus:
        print(repr(await bus.ensure_streams()))
        info = await bus.stream_info("LEARNING")
        cluster: dict[str, Any] = info["cluster"]
        peers = [cluster["leader"], *(r["name"] for r in cluster.get("replicas", []))]
        print(f"LEARNING: R{info['config']['num_replicas']} on {peers}, leader {cluster['leader']}")

        events: list[tuple[str, Any]] = [
            ("learning.session.started", Event("learner-1", "session")),
            ("learning.activity.completed", Event("learner-1", "activity", 42_000)),
            ("learning.activity.completed", Event("learner-2", "activity", -5)),  # poison
            ("homework.question.asked", Event("learner-2", "question")),
            ("homework.question.asked", b"\x00 not json"),  # poison
            ("recommendation.created", Event("learner-1", "recommendation")),
        ]
        events += [("focus.ping", Event(f"learner-{i % 4}", "ping")) for i in range(50)]
        events.append(("focus.loss.idle", Event("learner-3", "idle", 120_000)))
        await bus.publish_many(events)
        print(f"published {len(events)} events")

        # The services, as agent_main runs them; stopped once everything is settled.
        indexer, analytics = Indexer(), Analytics()
        running = workers(bus, indexer, analytics)
        async with contextlib.AsyncExitStack() as stack:
            for worker in running:
                await stack.enter_async_context(worker)
            await asyncio.wait_for(settled(bus, running), timeout=20.0)
        # Leaving the block stopped the workers (handlers finished, acks flushed).
        print(f"indexed {len(indexer.table)} events into Postgres")
        for stream, counts in analytics.counts.items():
            print(f"analytics {stream}: {dict(counts)}")

        dead = await bus.dead_letters("DLQ")
        print(f"DLQ holds {len(dead)} events:")
        for d in dead:
            print(
                f"  dead-lettered {d.stream}#{d.sequence} ({d.subject}) on delivery "
                f"{d.delivered}: {d.reason}"
            )


class OneLine(logging.Formatter):
    """Log records without their tracebacks: the demo's failures are on purpose."""

    def formatException(self, ei: Any) -> str:
        return ""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--serve", action="store_true", help="run the services on $NATS_URL until SIGTERM"
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
        from natsbus.testing import NatsCluster

        with NatsCluster(3) as cluster:
            asyncio.run(main(cluster.url))
