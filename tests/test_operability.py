"""Start before NATS, heal after it loses state, roll out safely, hear about the connection.

Issue 12, parts 1-3 and 7: ``connect(wait=)``, ``heal=True``, ``ensure_streams(create_only=True)``
and ``natsbus apply --create-only``, and the connection's events in logs, callbacks and
``bus.events()``. Every fault is real: the server is restarted, stopped or started late.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import nats
import pytest

import natsbus
from natsbus.testing import NatsServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OBSERVABILITY = EXAMPLES / "observability_agent" / "topology.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout}s")
        await asyncio.sleep(0.02)


async def stored_ids(url: str, stream: str) -> list[str]:
    """Every message id in ``stream``, read with nats-py (an independent client)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append((msg.headers or {}).get("Nats-Msg-Id", ""))
        return out
    finally:
        await nc.close()


# -- 2. heal -----------------------------------------------------------------------------------

AGENTS = ["metric_agent", "log_agent", "root_cause_agent"]


async def test_a_server_that_lost_its_memory_streams_is_healed_under_workers_and_a_publisher(
    fresh_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="natsbus")
    async with natsbus.connect(fresh_server.url, topology=OBSERVABILITY) as bus:
        await bus.ensure_streams()
        seen: dict[str, list[str]] = {a: [] for a in AGENTS}

        def handler_for(agent: str) -> Any:
            async def handle(msg: natsbus.Message[Any]) -> None:
                seen[agent].append(msg.data["id"])

            return handle

        workers = [bus.worker("AGENT_TASKS", a, handler_for(a)) for a in AGENTS]
        runs = [asyncio.create_task(w.run()) for w in workers]

        acked: list[tuple[float, str, str]] = []  # (when acked, agent subject, id)
        failures: list[tuple[float, str]] = []
        stop = asyncio.Event()

        async def publisher() -> None:
            n = 0
            while not stop.is_set():
                agent = AGENTS[n % len(AGENTS)]
                ident = f"m{n}"
                try:
                    await bus.publish(agent, {"id": ident}, msg_id=ident, timeout=1.0)
                    acked.append((time.monotonic(), agent, ident))
                    n += 1
                except natsbus.NatsbusError as e:
                    failures.append((time.monotonic(), type(e).__name__))
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.005)

        pub = asyncio.create_task(publisher())
        await until(lambda: all(seen[a] for a in AGENTS), 10, "every worker consumed")

        await asyncio.to_thread(fresh_server.restart)
        back = time.monotonic()
        # Within 5 s of the server being back: publishes succeed again...
        await until(lambda: any(t > back for t, _, _ in acked), 5, "a publish succeeded")
        first_ok = min(t for t, _, _ in acked if t > back)
        assert first_ok - back < 5.0
        # ...and every worker consumes again.
        counts = {a: len(seen[a]) for a in AGENTS}
        await until(
            lambda: all(len(seen[a]) > counts[a] for a in AGENTS), 5, "every worker consumed again"
        )
        await asyncio.sleep(0.5)
        stop.set()
        await pub
        # No message acked after the recovery is lost: each reached its agent.
        after = [(agent, ident) for t, agent, ident in acked if t > back]
        assert after
        await until(
            lambda: all(ident in seen[agent] for agent, ident in after), 10, "all were consumed"
        )
        for w in workers:
            await w.stop()
        await asyncio.gather(*runs)
        # The stream on the server holds what was acked after the restart (nats-py says so).
        ids = set(await stored_ids(fresh_server.url, "AGENT_TASKS"))
        assert {ident for _, ident in after} <= ids
    healed = [r for r in caplog.records if r.name == "natsbus.heal"]
    assert healed and all(r.levelno == logging.WARNING for r in healed), caplog.text
    assert any("stream AGENT_TASKS" in r.getMessage() for r in healed), caplog.text
    assert any("consumer AGENT_TASKS > metric_agent" in r.getMessage() for r in healed)


async def test_a_declared_consumer_deleted_under_its_reader_is_recreated(
    fresh_server: NatsServer,
) -> None:
    topology = {
        "streams": {
            "JOBS": {
                "subjects": ["jobs.>"],
                "storage": "memory",
                "consumers": {"runner": {"ack_policy": "explicit", "ack_wait": "2s"}},
            }
        }
    }
    async with natsbus.connect(fresh_server.url, topology=topology) as bus:
        await bus.ensure_streams()
        await bus.publish("jobs.a", {"n": 0})
        got: list[int] = []
        async with bus.consume("JOBS", "runner", batch=5) as c:
            async for msg in c:
                got.append(msg.data["n"])
                await msg.ack()
                if len(got) == 1:
                    await bus.jetstream_api("CONSUMER.DELETE.JOBS.runner")
                    await bus.publish("jobs.a", {"n": 1})
                if got[-1] == 1:
                    break
        assert got[0] == 0 and got[-1] == 1
        info = await bus.consumer_info("JOBS", "runner")
        assert info["config"]["ack_wait"] == 2 * 10**9


async def test_heal_false_leaves_a_lost_stream_lost(fresh_server: NatsServer) -> None:
    topology = {"streams": {"T": {"subjects": ["t.>"], "storage": "memory"}}}
    async with natsbus.connect(fresh_server.url, topology=topology, heal=False) as bus:
        assert bus.heals is False
        await bus.ensure_streams()
        await asyncio.to_thread(fresh_server.restart)
        await until(lambda: bus.connected, 10, "reconnected")
        with pytest.raises(natsbus.NoStreamError, match=r"t\.x"):
            await bus.publish("t.x", b"1", timeout=2.0)
        with pytest.raises(natsbus.StreamNotFoundError):
            await bus.stream_info("T")


async def test_a_publish_that_finds_no_stream_heals_it_and_goes_through(
    fresh_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="natsbus.heal")
    topology = {"streams": {"P": {"subjects": ["p.>"], "storage": "memory"}}}
    async with natsbus.connect(fresh_server.url, topology=topology) as bus:
        assert bus.heals is True
        # Never applied: the first publish finds no stream and creates it.
        ack = await bus.publish("p.x", b"1")
        assert (ack.stream, ack.seq) == ("P", 1)
    assert "re-created stream P" in caplog.text
    assert 'a publish to "p.x" found no stream' in caplog.text


async def test_a_subject_no_declared_stream_captures_still_fails_at_once(bus: natsbus.Bus) -> None:
    bus._core.set_topology({"streams": {"Q": {"subjects": ["q.>"], "storage": "memory"}}})
    t0 = time.monotonic()
    with pytest.raises(natsbus.NoStreamError):
        await bus.publish("nobody.captures.this", b"x")
    assert time.monotonic() - t0 < 1.0


# -- 3. create-only ----------------------------------------------------------------------------


def rollout_topologies() -> tuple[dict[str, Any], dict[str, Any]]:
    new = {
        "streams": {
            "ROLL": {
                "subjects": ["roll.>"],
                "storage": "memory",
                "max_msgs": 5000,
                "consumers": {"w": {"ack_policy": "explicit", "max_deliver": 10}},
            }
        }
    }
    old = {
        "streams": {
            "ROLL": {
                "subjects": ["roll.>"],
                "storage": "memory",
                "max_msgs": 1000,  # the old pod's lower limit: destructive to apply
                "consumers": {
                    "w": {"ack_policy": "explicit", "max_deliver": 3},
                    "audit": {"ack_policy": "explicit"},  # new to the server
                },
            },
            "OLD_ONLY": {"subjects": ["old.>"], "storage": "memory"},
        }
    }
    return new, old


async def test_create_only_creates_what_is_missing_and_changes_nothing_else(
    fresh_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="natsbus.topology")
    new, old = rollout_topologies()
    async with natsbus.connect(fresh_server.url) as bus:
        await bus.ensure_streams(new)
        with pytest.raises(natsbus.ApplyError):
            await bus.ensure_streams(old)  # the normal mode refuses the destructive change
        caplog.clear()
        plan = await bus.ensure_streams(old, create_only=True)
        actions = {c.target: c.action for c in plan.changes}
        assert actions["stream OLD_ONLY"] == "create"
        assert actions["consumer ROLL/audit"] == "create"
        assert actions["stream ROLL"] == "destructive"
        assert actions["consumer ROLL/w"] == "update"
        # Nothing but the creates happened.
        roll = await bus.stream_info("ROLL")
        assert roll["config"]["max_msgs"] == 5000
        w = await bus.consumer_info("ROLL", "w")
        assert w["config"]["max_deliver"] == 10
        await bus.consumer_info("ROLL", "audit")
        await bus.stream_info("OLD_ONLY")
        # Run again: idempotent, still never refuses.
        again = await bus.ensure_streams(old, create_only=True)
        assert not again.by_action("create")
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "created stream OLD_ONLY" in infos and "created consumer ROLL > audit" in infos
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per run, naming what was left alone
    assert "left 2 differences alone" in warnings[0]
    assert (
        "stream ROLL (max_msgs)" in warnings[0] and "consumer ROLL > w (max_deliver)" in warnings[0]
    )


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbus", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_apply_create_only_exits_0_and_warns_about_what_it_left(
    fresh_server: NatsServer, tmp_path: Path
) -> None:
    import json

    new, old = rollout_topologies()
    async with natsbus.connect(fresh_server.url) as bus:
        await bus.ensure_streams(new)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    refused = await asyncio.to_thread(cli, "apply", str(path), "-s", fresh_server.url)
    assert refused.returncode != 0
    done = await asyncio.to_thread(cli, "apply", str(path), "--create-only", "-s", fresh_server.url)
    assert done.returncode == 0, done.stderr
    assert "OLD_ONLY" in done.stdout and "audit" in done.stdout
    assert "left 2 differences alone" in done.stderr
    async with natsbus.connect(fresh_server.url) as bus:
        assert (await bus.stream_info("ROLL"))["config"]["max_msgs"] == 5000


# -- 1. start-up -------------------------------------------------------------------------------


async def test_connect_wait_keeps_trying_until_the_server_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="natsbus.connection")
    port = free_port()
    server = NatsServer(port=port)
    timer = threading.Timer(1.5, server.start)
    timer.start()
    try:
        t0 = time.monotonic()
        async with natsbus.connect(f"nats://127.0.0.1:{port}", wait=20) as bus:
            waited = time.monotonic() - t0
            assert bus.connected
            bus.publish_core("x", b"1")
        assert waited >= 1.0
        assert f"waiting up to 20s for NATS at nats://127.0.0.1:{port}" in caplog.text
        assert "connected to" in caplog.text
    finally:
        timer.join()
        server.stop()


async def test_connect_wait_gives_up_after_wait_seconds() -> None:
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(natsbus.ConnectError, match=r"within 1\.5s \(wait=;"):
        await natsbus.connect(f"nats://127.0.0.1:{port}", wait=1.5, connect_timeout=0.5)
    assert 1.4 <= time.monotonic() - t0 < 4.0


async def test_a_rejected_credential_never_waits(userpass_server: NatsServer) -> None:
    t0 = time.monotonic()
    with pytest.raises(natsbus.AuthError):
        await natsbus.connect(userpass_server.url, user="agent", password="wrong", wait=30)
    assert time.monotonic() - t0 < 5.0


@pytest.mark.parametrize("wait", [-1, "soon", float("nan")])
async def test_a_bad_wait_is_refused(wait: Any) -> None:
    with pytest.raises(natsbus.InvalidArgumentError, match="wait must be a number"):
        natsbus.connect("nats://127.0.0.1:1", wait=wait)


# -- 7. events ---------------------------------------------------------------------------------


async def test_losing_and_regaining_the_connection_is_logged_and_reported(
    fresh_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="natsbus")
    called: list[natsbus.Event] = []

    async def on_event(e: natsbus.Event) -> None:
        called.append(e)

    async with natsbus.connect(fresh_server.url, on_event=on_event) as bus:
        seen: list[natsbus.Event] = []

        async def watch() -> None:
            async for e in bus.events():
                seen.append(e)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.05)
        await asyncio.to_thread(fresh_server.restart)
        await until(lambda: any(e.kind == "reconnected" for e in seen), 10, "reconnected")
        await until(lambda: any(e.kind == "reconnected" for e in called), 2, "callback called")
    await asyncio.wait_for(watcher, 5)  # the iterator ends with the bus
    kinds = [e.kind for e in seen]
    assert kinds.index("disconnected") < kinds.index("reconnected")
    lost = next(r for r in caplog.records if "lost the connection" in r.getMessage())
    back = next(r for r in caplog.records if "reconnected to" in r.getMessage())
    assert (lost.name, lost.levelno) == ("natsbus.connection", logging.WARNING)
    assert (back.name, back.levelno) == ("natsbus.connection", logging.INFO)
    assert f"127.0.0.1:{fresh_server.port}" in back.getMessage()
    assert not any(r.getMessage().startswith("natsbus:") for r in caplog.records)


async def test_a_permission_violation_is_logged_as_a_server_error_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = """
authorization { users: [
  { user: app, password: "pw-s3cret", permissions: { publish: ["app.>"], subscribe: ["_INBOX.>"] } }
] }
"""
    caplog.set_level(logging.INFO, logger="natsbus")
    with NatsServer(config=config) as server:
        url = f"nats://app:pw-s3cret@127.0.0.1:{server.port}"
        async with natsbus.connect(url) as bus:
            events = bus.events()
            bus.publish_core("denied.subject", b"x")
            await bus.flush()
            e = await asyncio.wait_for(events.__anext__(), 5)
            assert e.kind == "server_error"
            assert 'Permissions Violation for Publish to "denied.subject"' in e.message
    record = next(r for r in caplog.records if "denied.subject" in r.getMessage())
    assert (record.name, record.levelno) == ("natsbus.connection", logging.ERROR)
    assert "pw-s3cret" not in caplog.text


async def test_the_readme_start_up_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Start-up, healing and rollouts", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    port = free_port()
    server = NatsServer(port=port)
    timer = threading.Timer(1.0, server.start)  # NATS comes up after the agent
    timer.start()
    try:
        await namespace["main"](f"nats://127.0.0.1:{port}")
    finally:
        timer.join()
        server.stop()
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["['stream TASKS', 'consumer TASKS/runner']", "TASKS 1"]


async def test_lame_duck_mode_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="natsbus")
    config = 'lame_duck_duration: "30s"\nlame_duck_grace_period: "10s"\n'
    with NatsServer(config=config) as server:
        async with natsbus.connect(server.url, max_reconnects=1) as bus:
            events = bus.events()
            server.lame_duck()
            e = await asyncio.wait_for(events.__anext__(), 10)
            assert e.kind == "lame_duck"
            assert f"127.0.0.1:{server.port}" in e.message
    record = next(r for r in caplog.records if "lame duck mode" in r.getMessage())
    assert (record.name, record.levelno) == ("natsbus.connection", logging.WARNING)


async def test_close_returns_while_the_server_is_down(fresh_server: NatsServer) -> None:
    """An agent told to stop while NATS is down must still exit (SIGTERM during an outage)."""
    topology = {
        "streams": {
            "DOWN": {
                "subjects": ["down.>"],
                "storage": "memory",
                "consumers": {"w": {"ack_policy": "explicit"}},
            }
        }
    }
    bus = await natsbus.connect(fresh_server.url, topology=topology, connect_timeout=1.0)
    await bus.ensure_streams()
    await bus.publish("down.x", b"1")
    consumer = bus.consume("DOWN", "w")
    msg = await consumer.__anext__()
    await asyncio.to_thread(fresh_server.stop)
    await msg.ack()  # queued: the connection is gone
    t0 = time.monotonic()
    await asyncio.wait_for(bus.close(), 15)
    assert time.monotonic() - t0 < 8.0
    assert bus.closed
