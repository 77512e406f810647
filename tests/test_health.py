"""health(): what a readiness probe reads."""

from __future__ import annotations

from conftest import StreamFactory

import natsbus
from natsbus.testing import NatsServer


async def test_health_reports_server_and_account(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    await make_stream("c1")
    h = await bus.health()
    assert h.connected is True and h.ok is True
    assert h.server_version.startswith("2.")
    assert h.rtt is not None and 0 < h.rtt < 1.0
    assert h.jetstream is True
    assert h.streams is not None and h.streams >= 1
    assert h.consumers is not None and h.consumers >= 1
    d = h.to_dict()
    assert d["server_version"] == h.server_version and d["streams"] == h.streams
    assert "server_version" in repr(h)


async def test_health_without_jetstream() -> None:
    with NatsServer(jetstream=False) as srv:
        async with natsbus.connect(srv.url) as bus:
            h = await bus.health()
            assert h.connected is True
            assert h.jetstream is False and h.ok is False
            assert h.streams is None
            assert h.error and "JetStream" in h.error


async def test_health_after_close(nats_url: str) -> None:
    bus = await natsbus.connect(nats_url)
    await bus.close()
    h = await bus.health()
    assert h.connected is False and h.ok is False
