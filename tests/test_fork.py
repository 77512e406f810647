"""A forked child (gunicorn --preload, celery prefork, multiprocessing's fork start method,
os.fork) gets a working natsbus, and what it inherited from the parent fails at once, saying why.

These tests are plain (not async) functions: a child forked while an event loop runs in the
forking thread could not start a loop of its own.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import time
from typing import Any, Optional

import natsbus

CHILD_DEADLINE = 20.0


async def in_child(url: str, inherited: natsbus.Bus, stream: str, subject: str) -> dict[str, Any]:
    """What a child does after fork: use the parent's bus, then connect anew."""
    out: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        await inherited.publish(subject, {"from": "inherited"})
        out["inherited"] = "published"
    except natsbus.NatsbusError as e:
        out["inherited"] = f"{type(e).__name__}: {e}"
    out["inherited_seconds"] = time.monotonic() - t0
    await inherited.close()  # nothing to close here, and no hang
    t0 = time.monotonic()
    async with natsbus.connect(url, name="child") as bus:
        ack = await bus.publish(subject, {"from": os.getpid()})
        out["seq"] = ack.seq
        async with bus.consume(stream, "w") as c:
            msg = await c.next(timeout=5)
            out["consumed"] = None if msg is None else msg.seq
            if msg is not None:
                await msg.ack()
    out["child_seconds"] = time.monotonic() - t0
    return out


async def parent_setup(url: str) -> tuple[natsbus.Bus, str, str]:
    bus = await natsbus.connect(url, name="parent")
    name = f"FORK{os.getpid()}_{time.monotonic_ns()}"
    subject = f"{name.lower()}.x"
    await bus.jetstream_api(
        f"STREAM.CREATE.{name}", {"name": name, "subjects": [subject], "storage": "memory"}
    )
    await bus.jetstream_api(
        f"CONSUMER.CREATE.{name}.w",
        {"stream_name": name, "config": {"durable_name": "w", "ack_policy": "explicit"}},
    )
    # The parent's runtime is busy and its bus open when the child is forked.
    await bus.publish(subject, {"from": "parent"})
    return bus, name, subject


def check_child(out: dict[str, Any]) -> None:
    assert out["inherited"].startswith(
        "ClosedError: this bus was created before this process forked"
    )
    assert "connect again in the child" in out["inherited"]
    assert out["inherited_seconds"] < 1.0
    assert out["seq"] >= 2
    assert out["consumed"] == 1
    assert out["child_seconds"] < CHILD_DEADLINE / 2


def wait_child(pid: int) -> int:
    deadline = time.monotonic() + CHILD_DEADLINE
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child hung")


def test_os_fork_child_gets_a_working_natsbus(nats_url: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        bus, stream, subject = loop.run_until_complete(parent_setup(nats_url))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.close(r)
                out = asyncio.run(in_child(nats_url, bus, stream, subject))
                os.write(w, json.dumps(out).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        code = wait_child(pid)
        with os.fdopen(r) as f:
            text = f.read()
        assert code == 0, f"child exited with {code}"
        check_child(json.loads(text))
        # The parent's bus is unaffected.
        ack = loop.run_until_complete(bus.publish(subject, {"from": "parent again"}))
        assert ack.seq >= 3
        loop.run_until_complete(bus.close())
    finally:
        loop.close()


def mp_child(url: str, stream: str, subject: str, inherited: Any, queue: Any) -> None:
    result: Optional[dict[str, Any]] = None
    try:
        result = asyncio.run(in_child(url, inherited, stream, subject))
    except BaseException as e:
        result = {"error": repr(e)}
    finally:
        queue.put(result)


def test_multiprocessing_fork_child_gets_a_working_natsbus(nats_url: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        bus, stream, subject = loop.run_until_complete(parent_setup(nats_url))
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        proc = ctx.Process(target=mp_child, args=(nats_url, stream, subject, bus, queue))
        proc.start()
        try:
            out = queue.get(timeout=CHILD_DEADLINE)
        finally:
            proc.join(CHILD_DEADLINE)
            if proc.is_alive():
                proc.kill()
        assert proc.exitcode == 0
        assert "error" not in out, out
        check_child(out)
        loop.run_until_complete(bus.close())
    finally:
        loop.close()
