"""natsbus quickstart: declare a stream, publish typed events, consume them durably.

Runs against $NATS_URL, or starts a throwaway JetStream server when it is unset
(needs ``pip install "natsbus[server]"``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os

import natsbus

TOPOLOGY = {
    "streams": {
        "ORDERS": {
            "subjects": ["orders.>"],
            "retention": "limits",
            "max_age": "7d",
            "consumers": {
                "fulfillment": {"ack_policy": "explicit", "ack_wait": "30s", "max_deliver": 5},
            },
        },
    },
}


@dataclasses.dataclass
class Order:
    id: int
    item: str
    qty: int


async def main(url: str) -> None:
    async with natsbus.connect(url, name="quickstart", topology=TOPOLOGY) as bus:
        plan = await bus.ensure_streams()  # idempotent: creates what is missing
        print(plan)

        ack = await bus.publish("orders.created", Order(1, "widget", 2), msg_id="order-1")
        print("stored", ack)
        acks = await bus.publish_many(
            [("orders.created", Order(i, "gadget", i % 3 + 1)) for i in range(2, 6)]
        )
        print("pipelined", [a.seq for a in acks])

        async with bus.consume("ORDERS", "fulfillment", model=Order) as orders:
            async for msg in orders:
                order: Order = msg.data
                print(f"seq={msg.seq} delivered={msg.delivered} {order}")
                await msg.ack()
                if msg.pending == 0:
                    break

        health = await bus.health()
        print("healthy" if health.ok else "unhealthy", health)


if __name__ == "__main__":
    url = os.environ.get("NATS_URL")
    if url:
        asyncio.run(main(url))
    else:
        from natsbus.testing import NatsServer

        with NatsServer() as server:
            print(f"started a throwaway nats-server at {server.url}")
            asyncio.run(main(server.url))
