"""OpsConductor-Pulse IoT on natsbus: telemetry ingest, batch writer, route delivery.

- The ingest service receives device readings (from EMQX or HTTP) and stores
  them on ``telemetry.<tenant_id>`` with ``publish_many``. Each reading's
  msg id is ``<device>:<ts>``, so a device or broker retry inside the 2-minute
  duplicate window is dropped by the stream.
- The ``ingest-workers`` batch writer takes readings in batches and writes
  each batch to the database in one go (a list here), then acks it.
- Devices report shadow state and command acknowledgements.
- Route jobs (webhooks) go to the ROUTES work queue; ``route-delivery`` posts
  them, retries a failing endpoint, and gives up on the third delivery
  (``max_deliver: 3``) with ``term()``, which removes the job from the queue.

Run: ``python examples/iot_pulse/agents.py`` (uses ``$NATS_URL``, or starts a
throwaway nats-server).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import natsbus

TOPOLOGY = Path(__file__).with_name("topology.yaml")


@dataclasses.dataclass
class Reading:
    tenant_id: str
    device_id: str
    ts: int
    metric: str
    value: float


@dataclasses.dataclass
class RouteJob:
    route_id: str
    url: str
    reading: Reading


class EndpointDown(Exception):
    pass


async def ingest(bus: natsbus.Bus, readings: list[Reading]) -> int:
    """Store readings; returns how many were new (not duplicates)."""
    acks = await bus.publish_many(
        (f"telemetry.{r.tenant_id}", r, {"Nats-Msg-Id": f"{r.device_id}:{r.ts}"}) for r in readings
    )
    return sum(not ack.duplicate for ack in acks)


async def batch_writer(bus: natsbus.Bus, expected: int) -> list[list[Reading]]:
    """One ingest worker: write readings to the database in batches of up to 250."""
    writes: list[list[Reading]] = []
    async with bus.consume("TELEMETRY", "ingest-workers", model=Reading) as consumer:
        async for batch in consumer.batches(max_messages=250, timeout=0.2):
            writes.append([msg.data for msg in batch])  # INSERT ... VALUES (...), (...), ...
            for msg in batch:
                await msg.ack()
            print(f"  wrote a batch of {len(batch)} readings")
            if sum(map(len, writes)) >= expected:
                break
    return writes


def post_webhook(job: RouteJob) -> None:
    if "unreachable" in job.url:
        raise EndpointDown(f"{job.url} returned 503")


async def route_delivery(bus: natsbus.Bus, jobs: int) -> tuple[int, int]:
    """Deliver route jobs; returns (delivered, given up)."""
    delivered = failed = 0
    async with bus.consume("ROUTES", "route-delivery", model=RouteJob) as queue:
        while delivered + failed < jobs:
            msg = await queue.next(timeout=5.0)
            if msg is None:
                break
            job: RouteJob = msg.data
            try:
                post_webhook(job)
            except EndpointDown as exc:
                if msg.delivered >= 3:  # the consumer's max_deliver
                    await msg.term(reason=f"gave up after {msg.delivered} attempts: {exc}")
                    print(f"  {job.route_id}: gave up ({exc})")
                    failed += 1
                else:
                    await msg.nak(delay=0.1 * msg.delivered)
                continue
            await msg.ack()
            print(f"  {job.route_id}: delivered to {job.url} (attempt {msg.delivered})")
            delivered += 1
    return delivered, failed


async def main(url: str) -> None:
    async with natsbus.connect(url, name="pulse-ingest", topology=TOPOLOGY) as bus:
        print(repr(await bus.ensure_streams()))

        readings = [
            Reading(f"tenant-{d % 2}", f"dev-{d}", 1_700_000_000 + t, "temp_c", 20 + d + t / 10)
            for d in range(10)
            for t in range(60)
        ]
        retried = readings[:25]  # EMQX redelivers some after a broker hiccup
        stored = await ingest(bus, readings + retried)
        print(f"ingest: {len(readings) + len(retried)} received, {stored} stored")

        writes = await asyncio.wait_for(batch_writer(bus, stored), timeout=10.0)
        print(f"batch writer: {sum(map(len, writes))} readings in {len(writes)} writes")

        await bus.publish("shadow.tenant-0.dev-3", {"reported": {"fw": "1.4.2", "led": "on"}})
        await bus.publish("commands.tenant-0.dev-3.ack", {"command_id": "c-19", "status": "done"})

        hot = [r for r in readings if r.value > 30][:3]
        jobs = [
            RouteJob("route-ok-1", "https://hooks.example.com/a", hot[0]),
            RouteJob("route-down", "https://unreachable.example.com/b", hot[1]),
            RouteJob("route-ok-2", "https://hooks.example.com/c", hot[2]),
        ]
        await bus.publish_many((f"routes.{j.reading.tenant_id}.{j.route_id}", j) for j in jobs)
        print("route delivery:")
        delivered, failed = await asyncio.wait_for(route_delivery(bus, len(jobs)), timeout=10.0)
        print(f"routes: {delivered} delivered, {failed} given up")


if __name__ == "__main__":
    url = os.environ.get("NATS_URL")
    if url:
        asyncio.run(main(url))
    else:
        from natsbus.testing import NatsServer

        with NatsServer() as server:
            asyncio.run(main(server.url))
