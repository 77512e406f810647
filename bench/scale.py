"""What a start-up, a plan, an apply and a validation cost as the server and topology grow.

Side by side in one run, against real servers started here (natsbus.testing):

* ``startup``: an agent's ``ensure_streams()`` of a 3-stream topology (already applied) on a
  server holding OTHERS other streams, against nats-py doing what a hand-written agent does:
  3 ``stream_info`` + 3 ``consumer_info``.
* ``plan``: ``bus.plan()`` of the same topology (which also lists the others, by name).
* ``create_r3``: creating N R3 streams on a 3-node cluster with ``ensure_streams()``, against
  nats-py's ``asyncio.gather`` of N ``add_stream`` calls.
* ``validate``: offline validation of topologies of growing numbers of subjects (no server),
  with how each step grows against the previous one (2x the subjects should cost about 2x).

Prints a table and the ratios; ``--json PATH`` writes them too. Run with the interpreter that
has natsbus and nats-py: ``.venv/bin/python bench/scale.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import nats

import natsbus
from natsbus.testing import NatsCluster, NatsServer

AGENT = {
    "streams": {
        f"AGENT{i}": {
            "subjects": [f"agent{i}.>"],
            "storage": "memory",
            "consumers": {"worker": {"ack_policy": "explicit"}},
        }
        for i in range(3)
    }
}


async def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    """The median of ``repeat`` timed runs of the coroutine function ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def startup(others: int, repeat: int) -> dict[str, Any]:
    with NatsServer() as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        for i in range(others):
            await js.add_stream(name=f"OTHER{i}", subjects=[f"other{i}.>"], storage="memory")
        async with natsbus.connect(server.url) as bus:
            await bus.ensure_streams(AGENT)

            async def natsbus_apply() -> None:
                plan = await bus.ensure_streams(AGENT)
                assert not plan.pending

            async def natsbus_plan() -> None:
                assert not (await bus.plan(AGENT)).pending

            async def natspy() -> None:
                for i in range(3):
                    await js.stream_info(f"AGENT{i}")
                    await js.consumer_info(f"AGENT{i}", "worker")

            # Warm both clients up, then take turns.
            await natsbus_apply()
            await natspy()
            t_apply = await best_of(repeat, natsbus_apply)
            t_plan = await best_of(repeat, natsbus_plan)
            t_py = await best_of(repeat, natspy)
        await nc.close()
    return {
        "others": others,
        "natsbus_ensure_streams_s": t_apply,
        "natsbus_plan_s": t_plan,
        "natspy_6_infos_s": t_py,
        "ensure_streams_vs_natspy": t_apply / t_py,
        "plan_vs_natspy": t_plan / t_py,
    }


async def create_r3(n: int) -> dict[str, Any]:
    topology = {
        "streams": {
            f"R3_{i}": {"subjects": [f"r3.{i}.>"], "replicas": 3, "storage": "memory"}
            for i in range(n)
        }
    }
    # Each client on a cluster of its own, so neither finds one warmed up by the other.
    with NatsCluster(3) as cluster:
        cluster.wait_settled()
        async with natsbus.connect(cluster.urls) as bus:
            t0 = time.perf_counter()
            plan = await bus.ensure_streams(topology)
            t_bus = time.perf_counter() - t0
            assert len(plan.by_action("create")) == n
    with NatsCluster(3) as cluster:
        cluster.wait_settled()
        nc = await nats.connect(cluster.urls)
        js = nc.jetstream(timeout=30)
        t0 = time.perf_counter()
        await asyncio.gather(
            *(
                js.add_stream(
                    name=f"R3_{i}", subjects=[f"r3.{i}.>"], num_replicas=3, storage="memory"
                )
                for i in range(n)
            )
        )
        t_py = time.perf_counter() - t0
        await nc.close()
    return {"streams": n, "natsbus_s": t_bus, "natspy_gather_s": t_py, "ratio": t_bus / t_py}


def validate(counts: list[int]) -> list[dict[str, Any]]:
    rows = []
    for subjects in counts:
        streams = {
            f"S{i}": {"subjects": [f"tenant{i}.svc{j}.>" for j in range(4)]}
            for i in range(subjects // 4)
        }
        t0 = time.perf_counter()
        natsbus.Topology.from_dict({"streams": streams})
        rows.append({"subjects": subjects, "seconds": time.perf_counter() - t0})
    for prev, row in pairwise(rows):
        row["growth"] = row["seconds"] / prev["seconds"]
        row["size_growth"] = row["subjects"] / prev["subjects"]
    return rows


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args()
    others = [0, 50] if args.quick else [0, 100, 500]
    r3 = [3] if args.quick else [10, 30]
    counts = [1_000, 2_000] if args.quick else [1_000, 5_000, 20_000, 100_000]
    repeat = 3 if args.quick else 9
    results: dict[str, Any] = {
        "startup": [await startup(n, repeat) for n in others],
        "create_r3": [await create_r3(n) for n in r3],
        "validate": validate(counts),
    }
    print(
        "startup: a 3-stream agent's ensure_streams() vs nats-py's 3 stream_info + 3 consumer_info"
    )
    print(f"{'other streams':>14} {'ensure_streams':>15} {'plan':>10} {'nats-py':>10} {'ratio':>7}")
    for r in results["startup"]:
        print(
            f"{r['others']:>14} {r['natsbus_ensure_streams_s'] * 1e3:>12.2f} ms"
            f" {r['natsbus_plan_s'] * 1e3:>7.2f} ms {r['natspy_6_infos_s'] * 1e3:>7.2f} ms"
            f" {r['ensure_streams_vs_natspy']:>6.2f}x"
        )
    print("\ncreate_r3: N R3 streams on a 3-node cluster vs nats-py asyncio.gather(add_stream)")
    for r in results["create_r3"]:
        print(
            f"{r['streams']:>6} streams: natsbus {r['natsbus_s']:.3f} s,"
            f" nats-py {r['natspy_gather_s']:.3f} s, ratio {r['ratio']:.2f}x"
        )
    print("\nvalidate: offline validation by number of subjects")
    for r in results["validate"]:
        growth = (
            f"  ({r['size_growth']:.0f}x the subjects: {r['growth']:.1f}x the time)"
            if "growth" in r
            else ""
        )
        print(f"{r['subjects']:>8} subjects: {r['seconds']:.3f} s{growth}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
