"""OpsConductor-Pulse IoT on natsbus: telemetry ingest, batch writer, route delivery.

- The ingest service receives device readings (from EMQX or HTTP) and stores
  them on ``telemetry.<tenant_id>`` with ``publish_many``. Each reading's
  msg id is ``<device>:<ts>``, so a device or broker retry inside the 2-minute
  duplicate window is dropped by the stream.
- The ``ingest-workers`` batch writer is a worker with 250 handlers at once:
  each adds its reading to the open batch and waits for that batch's write
  (one INSERT for up to 250 readings, a list here), so a reading is acked
  only once it is stored, and a failed write would nak every reading in it.
- Devices report shadow state and command acknowledgements.
- Route jobs (webhooks) go to the ROUTES work queue. The ``route-delivery``
  worker posts them (a sync handler, as with an HTTP client; the worker runs
  it in a thread). A failing endpoint raises: the job is retried after the
  consumer's ``backoff``, and when it fails on its third delivery
  (``max_deliver: 3``) the worker dead-letters it to ``dlq.routes``
  (``dead_letter:`` in topology.yaml) and terminates it, which removes it
  from the queue. A job no retry can help (a route whose URL is not https)
  raises ``natsbus.Reject`` and is dead-lettered at once. The demo lists the
  DLQ with ``bus.dead_letters("DLQ")``; once the endpoint is back,
  ``bus.redrive("DLQ", seqs=...)`` (``natsbus dead-letters DLQ --redrive
  --seq N``) sends its jobs to ROUTES again, and they are delivered.

Run the demo: ``python examples/iot_pulse/agents.py`` (uses ``$NATS_URL``, or
starts a throwaway nats-server). Run the batch writer and route delivery as a
service until SIGTERM or Ctrl-C: ``python examples/iot_pulse/agents.py
--serve`` (uses ``$NATS_URL``, default ``nats://127.0.0.1:4222``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

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


class BatchWriter:
    """The ingest-workers handler: readings are written in batches of up to ``size``.

    Run it with ``concurrency=size``: each handler adds its reading to the open
    batch and waits for that batch's write, which happens when the batch is
    full or ``linger`` seconds after its first reading.
    """

    def __init__(self, size: int = 250, linger: float = 0.05) -> None:
        self.size = size
        self.linger = linger
        self.writes: list[list[Reading]] = []  # stands in for the readings table
        self._batch: list[Reading] = []
        self._written: Optional[asyncio.Future[None]] = None
        self._timer: Optional[asyncio.TimerHandle] = None

    async def __call__(self, msg: natsbus.Message[Reading]) -> None:
        if self._written is None:
            loop = asyncio.get_running_loop()
            self._written = loop.create_future()
            self._timer = loop.call_later(self.linger, self._write)
        written = self._written
        self._batch.append(msg.data)
        if len(self._batch) >= self.size:
            self._write()
        await written  # returning acks the reading; an error naks it for a retry

    def _write(self) -> None:
        batch, written, timer = self._batch, self._written, self._timer
        self._batch, self._written, self._timer = [], None, None
        if timer is not None:
            timer.cancel()
        if written is None:
            return
        try:
            self.writes.append(batch)  # INSERT INTO readings VALUES (...), (...), ...
            print(f"  wrote a batch of {len(batch)} readings")
        except Exception as exc:
            written.set_exception(exc)
        else:
            written.set_result(None)


class RouteDelivery:
    """The route-delivery handler: POST the reading to the route's webhook."""

    def __init__(self) -> None:
        self.down = {"crm.example.com"}  # the demo's outage
        self.delivered: list[str] = []

    def __call__(self, msg: natsbus.Message[RouteJob]) -> None:
        job = msg.data
        url = urlsplit(job.url)
        if url.scheme != "https":  # a misconfigured route: retrying will not help
            raise natsbus.Reject(f"{job.url!r} is not an https URL")
        if url.hostname in self.down:  # requests.post(job.url, ...) fails
            print(f"  {job.route_id}: {job.url} returned 503 (attempt {msg.delivered})")
            raise EndpointDown(f"{job.url} returned 503")
        print(f"  {job.route_id}: delivered to {job.url} (attempt {msg.delivered})")
        self.delivered.append(job.route_id)


def workers(
    bus: natsbus.Bus, writer: BatchWriter, routes: RouteDelivery
) -> list[natsbus.Worker[Any]]:
    return [
        bus.worker("TELEMETRY", "ingest-workers", writer, model=Reading, concurrency=writer.size),
        bus.worker("ROUTES", "route-delivery", routes, model=RouteJob),
    ]


async def agent_main(url: Optional[str] = None) -> None:
    """The batch writer and route delivery: run until SIGTERM or SIGINT, then stop gracefully."""
    async with natsbus.connect(url, name="pulse-workers", topology=TOPOLOGY, wait=30) as bus:
        await bus.ensure_streams(create_only=True)
        await natsbus.run(*workers(bus, BatchWriter(), RouteDelivery()))


async def settled(bus: natsbus.Bus, running: Sequence[natsbus.Worker[Any]]) -> None:
    """Return once no consumer of ``running`` has a message left to deliver or settle."""
    while True:
        infos = [await bus.consumer_info(w.stream, w.durable) for w in running]
        if all(i["num_pending"] == 0 and i["num_ack_pending"] == 0 for i in infos):
            return
        await asyncio.sleep(0.05)


async def main(url: str) -> None:
    async with natsbus.connect(url, name="pulse-ingest", topology=TOPOLOGY) as bus:
        print(repr(await bus.ensure_streams()))

        # The workers, as agent_main runs them; stopped at the end of the block.
        writer, routes = BatchWriter(), RouteDelivery()
        running = workers(bus, writer, routes)
        async with contextlib.AsyncExitStack() as stack:
            for worker in running:
                await stack.enter_async_context(worker)

            readings = [
                Reading(f"tenant-{d % 2}", f"dev-{d}", 1_700_000_000 + t, "temp_c", 20 + d + t / 10)
                for d in range(10)
                for t in range(60)
            ]
            retried = readings[:25]  # EMQX redelivers some after a broker hiccup
            stored = await ingest(bus, readings + retried)
            print(f"ingest: {len(readings) + len(retried)} received, {stored} stored")
            await asyncio.wait_for(settled(bus, running[:1]), timeout=10.0)
            print(
                f"batch writer: {sum(map(len, writer.writes))} readings "
                f"in {len(writer.writes)} writes"
            )

            await bus.publish("shadow.tenant-0.dev-3", {"reported": {"fw": "1.4.2", "led": "on"}})
            await bus.publish(
                "commands.tenant-0.dev-3.ack", {"command_id": "c-19", "status": "done"}
            )

            hot = [r for r in readings if r.value > 30][:4]
            jobs = [
                RouteJob("route-ok-1", "https://hooks.example.com/a", hot[0]),
                RouteJob("route-crm", "https://crm.example.com/b", hot[1]),
                RouteJob("route-ok-2", "https://hooks.example.com/c", hot[2]),
                RouteJob("route-typo", "htps://hooks.example.com/d", hot[3]),
            ]
            print("route delivery:")
            await bus.publish_many((f"routes.{j.reading.tenant_id}.{j.route_id}", j) for j in jobs)
            await asyncio.wait_for(settled(bus, running[1:]), timeout=10.0)
            dead = await bus.dead_letters("DLQ")
            print(f"routes: {len(routes.delivered)} delivered, {len(dead)} dead-lettered")
            for d in dead:
                print(
                    f"  DLQ#{d.seq}: {d.stream}#{d.sequence} {d.subject}, "
                    f"delivery {d.delivered}: {d.reason}"
                )

            print("the CRM is back up: re-driving its jobs from the DLQ")
            routes.down.clear()
            crm = [d.seq for d in dead if "//crm.example.com/" in d.message.data["url"]]
            redriven = await bus.redrive("DLQ", seqs=crm)
            await asyncio.wait_for(settled(bus, running[1:]), timeout=10.0)
            left = await bus.dead_letters("DLQ")
            print(
                f"routes: {len(routes.delivered)} delivered after re-driving {len(redriven)}, "
                f"{len(left)} left in the DLQ"
            )


class OneLine(logging.Formatter):
    """Log records without their tracebacks: the demo's failures are on purpose."""

    def formatException(self, ei: Any) -> str:
        return ""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--serve", action="store_true", help="run the workers on $NATS_URL until SIGTERM"
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
