"""Dead letters declared in the topology: validated offline, kept in the
consumer's metadata (plan, verify and export round-trip them), written by
workers, listed and re-driven from Python and from the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest import unique
from test_cli import no_traceback, run

import natsbus


def topology(tag: str) -> dict[str, object]:
    return {
        "streams": {
            f"T{tag}": {
                "subjects": [f"t{tag}.>"],
                "retention": "workqueue",
                "storage": "memory",
                "consumers": {
                    "worker": {
                        "max_deliver": 3,
                        "backoff": ["100ms", "100ms"],
                        "dead_letter": f"dlq{tag}.tasks",
                    }
                },
            },
            f"DLQ{tag}": {"subjects": [f"dlq{tag}.>"], "storage": "memory"},
        }
    }


async def test_dead_letter_round_trips_through_the_server(nats_url: str) -> None:
    tag = unique("d")
    topo = natsbus.Topology.from_dict(topology(tag))
    async with natsbus.connect(nats_url, topology=topo) as bus:
        await bus.ensure_streams()
        info = await bus.consumer_info(f"T{tag}", "worker")
        assert info["config"]["metadata"]["natsbus.dead_letter"] == f"dlq{tag}.tasks"
        await bus.verify()  # live matches: the setting is compared like a field
        exported = await bus.export([f"T{tag}"])
        assert exported["streams"][f"T{tag}"]["consumers"]["worker"]["dead_letter"] == (
            f"dlq{tag}.tasks"
        )
        changed = topology(tag)
        changed["streams"][f"T{tag}"]["consumers"]["worker"]["dead_letter"] = f"dlq{tag}.other"  # type: ignore[index]
        with pytest.raises(natsbus.DriftError, match="dead_letter"):
            await bus.verify(changed)


def test_dead_letter_rules_offline() -> None:
    bad = topology("x")
    bad["streams"]["Tx"]["consumers"]["worker"]["dead_letter"] = "tx.failed"  # type: ignore[index]
    del bad["streams"]["Tx"]["consumers"]["worker"]["max_deliver"]  # type: ignore[index]
    with pytest.raises(natsbus.TopologyError) as caught:
        natsbus.Topology.from_dict(bad)
    text = str(caught.value)
    assert "the consumer's own stream" in text
    assert "finite max_deliver" in text


async def test_workers_dead_letter_and_the_cli_redrives(nats_url: str, tmp_path: Path) -> None:
    tag = unique("r")
    stream, dlq = f"T{tag}", f"DLQ{tag}"
    topo = natsbus.Topology.from_dict(topology(tag))
    attempts: dict[int, int] = {}
    async with natsbus.connect(nats_url, topology=topo) as bus:
        await bus.ensure_streams()
        await bus.publish(f"t{tag}.job", {"n": 1}, headers={"Trace": "abc"})
        await bus.publish(f"t{tag}.job", {"n": 2})
        await bus.publish(f"t{tag}.job", b"not json")

        async def handle(msg: natsbus.Message) -> None:
            n = msg.data["n"]
            attempts[n] = attempts.get(n, 0) + 1
            if n == 1:
                raise natsbus.Reject("customer unknown")
            raise RuntimeError("downstream down")

        async with bus.worker(stream, "worker", handle):
            for _ in range(100):
                if (await bus.stream_info(dlq))["state"]["messages"] == 3:
                    break
                await asyncio.sleep(0.1)
        assert attempts == {1: 1, 2: 3}, "rejected at once; failed up to max_deliver"
        letters = await bus.dead_letters(dlq)
        by_seq = {d.sequence: d for d in letters}
        assert sorted(by_seq) == [1, 2, 3]
        assert by_seq[1].reason == "customer unknown" and by_seq[1].delivered == 1
        assert by_seq[1].message.headers["Trace"] == "abc"
        assert "downstream down" in (by_seq[2].reason or "") and by_seq[2].delivered == 3
        assert "not JSON" in (by_seq[3].reason or "")
        assert {(d.stream, d.consumer, d.subject) for d in letters} == {
            (stream, "worker", f"t{tag}.job")
        }
        assert (await bus.stream_info(stream))["state"]["messages"] == 0, "nothing stranded"

    listed = run("dead-letters", dlq, "--json", "-s", nats_url)
    no_traceback(listed)
    assert listed.returncode == 0, listed.stderr
    out = json.loads(listed.stdout)
    listed_by_seq = {d["sequence"]: d for d in out["dead_letters"]}
    assert sorted(listed_by_seq) == [1, 2, 3]
    assert listed_by_seq[1]["reason"] == "customer unknown"

    text = run("dead-letters", dlq, "-s", nats_url)
    assert (
        text.returncode == 0
        and "3 dead letters" in text.stdout
        and "customer unknown" in text.stdout
    )

    first_seq = listed_by_seq[1]["seq"]
    redrive = run("dead-letters", dlq, "--redrive", "--seq", str(first_seq), "-s", nats_url)
    no_traceback(redrive)
    assert redrive.returncode == 0 and "re-drove 1 message" in redrive.stdout, redrive.stdout
    async with natsbus.connect(nats_url) as bus:
        assert (await bus.stream_info(dlq))["state"]["messages"] == 2
        back = await bus.get_message(stream, last_for_subject=f"t{tag}.job")
        assert back.data == {"n": 1}
        assert back.headers["Trace"] == "abc"
        assert not [h for h in back.headers if h.startswith("Natsbus-Dead-Letter")]
        done = await bus.redrive(dlq)
        assert len(done) == 2
        assert (await bus.stream_info(dlq))["state"]["messages"] == 0
        assert (await bus.stream_info(stream))["state"]["messages"] == 3

    missing = run("dead-letters", dlq, "--redrive", "--seq", "999", "-s", nats_url)
    assert missing.returncode == 1 and "no message at sequence(s) 999" in missing.stderr
