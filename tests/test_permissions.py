"""Users the server restricts are told at once, naming what they may not do, on every path.

The server answers a denied publish or subscription with ``-ERR 'Permissions Violation ...'``
and keeps the connection; natsbus turns that into ``AuthError`` within a second instead of
waiting out a timeout.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import natsbus
from natsbus.testing import NatsServer

PASSWORD = "pw-s3cret"

# admin: everything. app: may publish to app.> and use its inbox, nothing else (no JetStream
# API). agent: may use only its own inbox _INBOX_agent (plus the JetStream API, acks and
# orders.>), as a least-privilege agent would be configured.
CONFIG = f"""
authorization {{
  users: [
    {{ user: admin, password: {PASSWORD} }}
    {{ user: app, password: {PASSWORD},
       permissions: {{ publish: ["app.>"], subscribe: ["_INBOX.>"] }} }}
    {{ user: agent, password: {PASSWORD},
       permissions: {{
         publish: ["$JS.API.>", "$JS.ACK.>", "orders.>"],
         subscribe: ["_INBOX_agent.>"]
       }} }}
  ]
}}
"""

TOPOLOGY = {
    "streams": {
        "ORDERS": {
            "subjects": ["orders.>"],
            "storage": "memory",
            "consumers": {"fulfillment": {"ack_policy": "explicit"}},
        },
        "APP": {"subjects": ["app.>"], "storage": "memory"},
    }
}


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with NatsServer(config=CONFIG) as s:
        yield s


def url(server: NatsServer, user: str) -> str:
    return f"nats://{user}:{PASSWORD}@{server.host}:{server.port}"


@pytest.fixture(scope="module", autouse=True)
def streams(server: NatsServer) -> None:
    import asyncio

    async def setup() -> None:
        async with natsbus.connect(url(server, "admin"), topology=TOPOLOGY) as bus:
            await bus.ensure_streams()

    asyncio.run(setup())


class Quick:
    """Asserts the block raised ``AuthError`` (naming ``what``) within a second."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.t0 = 0.0
        self.raised: pytest.ExceptionInfo[natsbus.AuthError]

    def __enter__(self) -> Quick:
        self.t0 = time.monotonic()
        self._ctx = pytest.raises(natsbus.AuthError, match="permissions violation")
        self.raised = self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> bool:
        handled = self._ctx.__exit__(*exc)  # type: ignore[arg-type]
        elapsed = time.monotonic() - self.t0
        assert elapsed < 1.0, f"took {elapsed:.2f}s"
        assert self.what in str(self.raised.value), str(self.raised.value)
        return bool(handled)


async def test_a_user_without_the_jetstream_api_is_told_at_once(server: NatsServer) -> None:
    async with natsbus.connect(url(server, "app"), topology=TOPOLOGY) as bus:
        # Apply and plan ask about the declared streams (and plan about the rest) at once:
        # whichever request the server refuses first is named.
        with Quick('may not publish to "$JS.API.STREAM.'):
            await bus.ensure_streams()
        with Quick('may not publish to "$JS.API.STREAM.'):
            await bus.plan()
        with Quick("$JS.API.CONSUMER.INFO.ORDERS.fulfillment"):
            await bus.consume("ORDERS", "fulfillment").next(timeout=5)
        with Quick("$JS.API.STREAM.INFO.ORDERS"):
            await bus.stream_info("ORDERS")


async def test_denied_publishes_fail_at_once_on_every_path(server: NatsServer) -> None:
    for direct in (True, False):
        async with natsbus.connect(url(server, "app"), direct_publish=direct) as bus:
            ok = await bus.publish("app.ok", {"n": 1})
            assert ok.stream == "APP"
            with Quick('"orders.new"'):
                await bus.publish("orders.new", {"n": 1})
            with Quick('"orders.new"'):
                await bus.request("orders.new", {"n": 1})
            # The refusal comes back at once, often before the sender has
            # started waiting for the ack: repeat to catch a late watch.
            for _ in range(20):
                t0 = time.monotonic()
                with pytest.raises(natsbus.BatchPublishError) as err:
                    await bus.publish_many([("app.ok", {"n": 2}), ("orders.new", {"n": 3})])
                assert time.monotonic() - t0 < 1.0
                assert err.value.acks[0] is not None and err.value.acks[1] is None
                assert isinstance(err.value.errors[1], natsbus.AuthError)
                assert "orders.new" in str(err.value.errors[1])


async def test_health_of_a_least_privilege_user_is_quick_and_measures_the_round_trip(
    server: NatsServer,
) -> None:
    async with natsbus.connect(url(server, "app")) as bus:
        t0 = time.monotonic()
        h = await bus.health(timeout=1.0)
        assert time.monotonic() - t0 < 1.0
        assert h.connected and h.rtt is not None and h.rtt < 0.5
        assert not h.jetstream and h.error is not None and "permissions violation" in h.error
    async with natsbus.connect(url(server, "admin")) as bus:
        for timeout in (1.0, 0.2):
            t0 = time.monotonic()
            h = await bus.health(timeout=timeout)
            assert time.monotonic() - t0 < timeout + 0.2
            assert h.ok and h.rtt is not None


async def test_a_user_allowed_only_its_own_inbox_works_with_inbox_prefix(
    server: NatsServer,
) -> None:
    # Without the prefix, natsbus's inbox _INBOX.> is refused: said at once, with the fix.
    async with natsbus.connect(url(server, "agent"), direct_publish=False) as bus:
        with Quick("inbox_prefix="):
            await bus.publish("orders.new", {"n": 0})
    async with natsbus.connect(url(server, "agent"), inbox_prefix="_INBOX_agent") as bus:
        plan = await bus.ensure_streams(TOPOLOGY)
        assert not plan.pending
        ack = await bus.publish("orders.new", {"n": 1})
        assert ack.stream == "ORDERS"
        acks = await bus.publish_many([("orders.new", {"n": i}) for i in range(2, 5)])
        assert [a.stream for a in acks] == ["ORDERS"] * 3
        info = await bus.stream_info("ORDERS")
        assert info["state"]["messages"] >= 4
        async with bus.consume("ORDERS", "fulfillment") as c:
            msg = await c.next(timeout=5)
            assert msg is not None and msg.subject == "orders.new"
            await msg.ack_sync()
        h = await bus.health(timeout=1.0)
        assert h.ok and h.rtt is not None


def test_the_cli_reports_a_permission_violation_at_once(server: NatsServer, tmp_path: Path) -> None:
    topo = tmp_path / "topology.json"
    import json

    topo.write_text(json.dumps(TOPOLOGY))
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "natsbus", "plan", str(topo), "-s", url(server, "app")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert time.monotonic() - t0 < 5
    assert out.returncode == 1
    assert "permissions violation" in out.stderr and '"$JS.API.STREAM.' in out.stderr
    assert out.stderr.count("\n") == 1, out.stderr  # one error line, not the event as well
    assert PASSWORD not in out.stderr + out.stdout
