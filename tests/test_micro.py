"""``bus.serve()`` speaks the NATS micro protocol (issue 14, part 5).

nats-py is the independent side: it sends the discovery requests ``nats micro ls`` sends and
parses the answers with its own micro types (``nats.micro.service``).
"""

from __future__ import annotations

import json
from typing import Any

import nats
import pytest
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats

import natsbus


async def ask_all(url: str, subject: str, expect: int) -> list[dict[str, Any]]:
    """Every answer to ``subject`` (discovery requests get one per instance)."""
    nc = await nats.connect(url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(subject, b"", reply=inbox)
        out = []
        for _ in range(expect):
            msg = await sub.next_msg(timeout=5)
            out.append(json.loads(msg.data))
        return out
    finally:
        await nc.close()


async def test_services_are_found_pinged_and_counted(nats_url: str) -> None:
    async with natsbus.connect(nats_url) as bus:

        async def rca(msg: natsbus.Message[Any]) -> dict[str, Any]:
            if msg.data.get("fail"):
                raise ValueError("no data for that alert")
            return {"cause": "disk"}

        one = await bus.serve(
            "micro.rca",
            rca,
            queue="rca",
            name="rca",
            version="1.2.0",
            description="root cause analysis",
            metadata={"team": "sre"},
        )
        two = await bus.serve("micro.rca", rca, queue="rca", name="rca", version="1.2.0")
        try:
            pings = [ServicePing.from_dict(d) for d in await ask_all(nats_url, "$SRV.PING.rca", 2)]
            assert {p.id for p in pings} == {one.id, two.id}
            assert {(p.name, p.version) for p in pings} == {("rca", "1.2.0")}

            (info,) = [
                ServiceInfo.from_dict(d)
                for d in await ask_all(nats_url, f"$SRV.INFO.rca.{one.id}", 1)
            ]
            assert info.description == "root cause analysis"
            assert info.metadata == {"team": "sre"}
            assert [(e.subject, e.queue_group) for e in info.endpoints] == [("micro.rca", "rca")]

            await bus.request("micro.rca", {"alert": 1})
            with pytest.raises(natsbus.ServiceError):
                await bus.request("micro.rca", {"fail": True})
            stats = [
                ServiceStats.from_dict(d) for d in await ask_all(nats_url, "$SRV.STATS.rca", 2)
            ]
            (endpoint_totals,) = {
                (
                    sum(s.endpoints[0].num_requests for s in stats),
                    sum(s.endpoints[0].num_errors for s in stats),
                )
            }
            assert endpoint_totals == (2, 1)
            errors = [s.endpoints[0].last_error for s in stats if s.endpoints[0].num_errors]
            assert errors == ["ValueError: no data for that alert"]
        finally:
            await one.stop()
            await two.stop()


async def test_a_service_needs_a_micro_name_and_a_semantic_version(bus: natsbus.Bus) -> None:
    with pytest.raises(natsbus.InvalidArgumentError, match="letters, digits"):
        await bus.serve("micro.x", lambda m: None, name="has space")
    with pytest.raises(natsbus.InvalidArgumentError, match="not a semantic version"):
        await bus.serve("micro.x", lambda m: None, version="v1")
    service = await bus.serve("micro.orders.*.created", lambda m: None)
    try:
        assert service.name == "micro-orders-created"
    finally:
        await service.stop()
