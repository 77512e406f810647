"""AIVO on natsbus: events into Postgres via the indexer, with a dead-letter queue.

- Services publish learning, focus, homework and recommendation events.
- The ``indexer`` consumer of each stream writes events to the ``events``
  table (a dict here). A write that fails is retried (nak with a delay); on
  its last allowed delivery (``max_deliver`` of the consumer, 5) the event is
  dead-lettered: the original goes to ``dlq.<stream>`` with headers naming
  where it came from and why, and is terminated so it is not redelivered.
  A payload that is not valid JSON is dead-lettered at once.
- The ``analytics`` consumer counts LEARNING and FOCUS events in batches.

Everything runs on a 3-node cluster with every stream replicated 3 times.

Run: ``python examples/aivo/agents.py`` (uses ``$NATS_URL``, or starts a
throwaway 3-node cluster).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
from pathlib import Path
from typing import Any

import natsbus

TOPOLOGY = Path(__file__).with_name("topology.yaml")
INDEXED_STREAMS = ("LEARNING", "FOCUS", "HOMEWORK", "RECOMMENDATION")


@dataclasses.dataclass
class Event:
    learner_id: str
    kind: str
    duration_ms: int = 0


class RejectedByDatabase(Exception):
    pass


def insert_event(table: dict[str, Event], key: str, event: Event) -> None:
    """Stands in for INSERT INTO events ...; the CHECK constraint rejects negative durations."""
    if event.duration_ms < 0:
        raise RejectedByDatabase("violates check constraint events_duration_ms_check")
    table[key] = event


async def dead_letter(bus: natsbus.Bus, msg: natsbus.Message, error: str) -> None:
    """Move ``msg`` to ``dlq.<stream>`` and stop its redelivery."""
    assert msg.stream is not None
    headers = {
        **msg.headers,
        "Dlq-Source-Stream": msg.stream,
        "Dlq-Source-Subject": msg.subject,
        "Dlq-Source-Seq": str(msg.seq),
        "Dlq-Consumer": msg.consumer or "",
        "Dlq-Deliveries": str(msg.delivered),
        "Dlq-Error": error,
    }
    # The msg id makes this safe to repeat if we crash before term() below.
    await bus.publish(
        f"dlq.{msg.stream.lower()}",
        msg.payload,
        headers=headers,
        msg_id=f"{msg.stream}:{msg.seq}",
    )
    await msg.term(reason=error)
    print(f"  dead-lettered {msg.stream}#{msg.seq} after {msg.delivered} deliveries: {error}")


async def indexer(bus: natsbus.Bus, stream: str, table: dict[str, Event]) -> None:
    """Index one stream until it has been idle for a second."""
    info = await bus.consumer_info(stream, "indexer")
    max_deliver: int = info["config"]["max_deliver"]
    async with bus.consume(stream, "indexer", model=Event) as events:
        while (msg := await events.next(timeout=1.0)) is not None:
            try:
                event: Event = msg.data
            except natsbus.DecodeError as exc:  # retrying will not fix it
                await dead_letter(bus, msg, f"undecodable: {exc}")
                continue
            try:
                insert_event(table, f"{stream}:{msg.seq}", event)
            except RejectedByDatabase as exc:
                if msg.delivered >= max_deliver:
                    await dead_letter(bus, msg, str(exc))
                else:
                    await msg.nak(delay=0.05 * msg.delivered)  # back off, then retry
                continue
            await msg.ack()


async def analytics(bus: natsbus.Bus, stream: str) -> collections.Counter[str]:
    """Count events per subject, reading in batches until the stream is drained."""
    counts: collections.Counter[str] = collections.Counter()
    async with bus.consume(stream, "analytics") as consumer:
        async for batch in consumer.batches(max_messages=200, timeout=0.2):
            counts.update(msg.subject for msg in batch)
            for msg in batch:
                await msg.ack()
            if batch[-1].pending == 0:
                break
    return counts


async def main(url: str) -> None:
    async with natsbus.connect(url, name="aivo-indexer", topology=TOPOLOGY) as bus:
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

        table: dict[str, Event] = {}
        indexers = [indexer(bus, stream, table) for stream in INDEXED_STREAMS]
        await asyncio.wait_for(asyncio.gather(*indexers), timeout=20.0)
        print(f"indexed {len(table)} events into Postgres")

        for stream in ("LEARNING", "FOCUS"):
            counts = await asyncio.wait_for(analytics(bus, stream), timeout=10.0)
            print(f"analytics {stream}: {dict(counts)}")

        dlq = await bus.stream_info("DLQ")
        print(f"DLQ holds {dlq['state']['messages']} events")


if __name__ == "__main__":
    url = os.environ.get("NATS_URL")
    if url:
        asyncio.run(main(url))
    else:
        from natsbus.testing import NatsCluster

        with NatsCluster(3) as cluster:
            asyncio.run(main(cluster.url))
