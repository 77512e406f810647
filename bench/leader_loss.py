"""How long publishing stalls when an R3 stream's leader is killed: natsbus vs nats-py, one run.

    python bench/leader_loss.py [--rounds 5]

Each round starts a fresh 3-node cluster (natsbus.testing), creates an R3 stream, and runs one
publisher per client, connected first to the stream leader's node. After a second the leader is
killed (SIGKILL). The stall is the longest gap between two consecutive acked publishes; errors
are counted by type. A natsbus publish waits out an election within its timeout (it retries "no
responders" while a stream captures the subject); the nats-py publisher retries in a loop on
any error, as a careful application would.

Prints one line per round and the median stall per client. Needs nats-py (the bench extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from typing import Any

import natsbus
from natsbus.testing import NatsCluster

SUBJECT = "ll.x"
RUN_SECONDS = 10.0
KILL_AFTER = 1.0


async def leader_of(url: list[str]) -> str:
    async with natsbus.connect(url) as bus:
        for _ in range(100):
            info = await bus.stream_info("LL")
            leader = (info.get("cluster") or {}).get("leader")
            if leader:
                return str(leader)
            await asyncio.sleep(0.1)
    raise RuntimeError("no leader")


async def natsbus_publisher(urls: list[str], stop: asyncio.Event, out: dict[str, Any]) -> None:
    async with natsbus.connect(urls, name="leader-loss-natsbus") as bus:
        last = time.monotonic()
        i = 0
        while not stop.is_set():
            i += 1
            try:
                await bus.publish(SUBJECT, {"i": i}, msg_id=f"nb{i}", timeout=15)
                now = time.monotonic()
                out["gaps"].append(now - last)
                last = now
                out["acked"] += 1
            except natsbus.NatsbusError as e:
                out["errors"][type(e).__name__] += 1


async def natspy_publisher(urls: list[str], stop: asyncio.Event, out: dict[str, Any]) -> None:
    import nats

    nc = await nats.connect(servers=urls, name="leader-loss-natspy", max_reconnect_attempts=-1)
    js = nc.jetstream()
    last = time.monotonic()
    i = 0
    while not stop.is_set():
        i += 1
        try:
            await js.publish(
                SUBJECT, json.dumps({"i": i}).encode(), headers={"Nats-Msg-Id": f"np{i}"}
            )
            now = time.monotonic()
            out["gaps"].append(now - last)
            last = now
            out["acked"] += 1
        except Exception as e:
            out["errors"][type(e).__name__] += 1
            await asyncio.sleep(0.01)
    await nc.close()


async def one_round(client: str) -> dict[str, Any]:
    with NatsCluster(3) as cluster:
        async with natsbus.connect(cluster.urls) as admin:
            await admin.jetstream_api(
                "STREAM.CREATE.LL",
                {"name": "LL", "subjects": ["ll.>"], "num_replicas": 3, "storage": "file"},
                timeout=20,
            )
        leader = await leader_of(cluster.urls)
        dead = next(n for n in cluster.nodes if n.server_name == leader)
        urls = [dead.url] + [n.url for n in cluster.nodes if n is not dead]
        out: dict[str, Any] = {"gaps": [], "acked": 0, "errors": Counter()}
        stop = asyncio.Event()
        run = natsbus_publisher if client == "natsbus" else natspy_publisher
        task = asyncio.ensure_future(run(urls, stop, out))
        await asyncio.sleep(KILL_AFTER)
        dead.kill()
        await asyncio.sleep(RUN_SECONDS - KILL_AFTER)
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        return {
            "client": client,
            "stall_s": round(max(out["gaps"]), 2) if out["gaps"] else None,
            "acked": out["acked"],
            "errors": dict(out["errors"]),
        }


async def main(rounds: int) -> None:
    stalls: dict[str, list[float]] = {"natsbus": [], "nats-py": []}
    for r in range(1, rounds + 1):
        for client in ("natsbus", "nats-py"):
            res = await one_round(client)
            print(
                f"round {r} {client:8} stall {res['stall_s']}s acked {res['acked']} "
                f"errors {res['errors']}",
                flush=True,
            )
            if res["stall_s"] is not None:
                stalls[client].append(res["stall_s"])
    for client, values in stalls.items():
        if values:
            print(
                f"{client:8} stall: median {statistics.median(values):.2f}s "
                f"(min {min(values):.2f}s, max {max(values):.2f}s) over {len(values)} rounds"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
