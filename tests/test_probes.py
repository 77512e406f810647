"""bus.serve_probes(): /healthz and /readyz over plain HTTP, as a kubelet or docker asks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import unique

import natsbus
from natsbus.testing import NatsServer


async def http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw ``request`` bytes; return the status, headers and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def get(port: int, path: str, method: str = "GET") -> tuple[int, Any]:
    status, _, body = await http(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return status, json.loads(body) if body else None


@pytest.fixture
async def declared(nats_url: str) -> AsyncIterator[tuple[natsbus.Bus, str]]:
    stream = unique("PRB")
    topo = {
        "streams": {
            stream: {
                "subjects": [f"{stream.lower()}.>"],
                "storage": "memory",
                "consumers": {"worker": {}},
            }
        }
    }
    async with natsbus.connect(nats_url, topology=topo, heal=False) as bus:
        await bus.ensure_streams()
        yield bus, stream


async def test_healthz_and_readyz_answer_200_with_json(
    declared: tuple[natsbus.Bus, str],
) -> None:
    bus, stream = declared
    async with await bus.serve_probes(0, "127.0.0.1") as probes:
        assert probes.port > 0 and probes.url == f"http://127.0.0.1:{probes.port}"
        status, body = await get(probes.port, "/healthz")
        assert status == 200 and body["ok"] is True and body["connected"] is True
        status, body = await get(probes.port, "/readyz?verbose=1")
        assert status == 200 and body["status"] == "ok" and body["exit_code"] == 0
        assert any(c["target"] == f"consumer {stream} > worker" for c in body["checks"])

        # what a kubelet or curl does, from another thread
        def fetch() -> tuple[int, str]:
            with urllib.request.urlopen(probes.url + "/readyz", timeout=5) as resp:
                return resp.status, resp.headers["Content-Type"]

        assert await asyncio.to_thread(fetch) == (200, "application/json")


async def test_other_paths_methods_and_head(declared: tuple[natsbus.Bus, str]) -> None:
    bus, _ = declared
    async with await bus.serve_probes(0, "127.0.0.1") as probes:
        assert (await get(probes.port, "/"))[0] == 404
        assert (await get(probes.port, "/metrics"))[0] == 404
        status, headers, _ = await http(probes.port, b"POST /readyz HTTP/1.1\r\n\r\n")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        status, headers, body = await http(probes.port, b"HEAD /readyz HTTP/1.1\r\n\r\n")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


async def test_readyz_fails_while_a_declared_consumer_is_missing(
    declared: tuple[natsbus.Bus, str],
) -> None:
    bus, stream = declared
    async with await bus.serve_probes(0, "127.0.0.1", cache=0.2) as probes:
        assert (await get(probes.port, "/readyz"))[0] == 200
        await bus.jetstream_api(f"CONSUMER.DELETE.{stream}.worker")
        await asyncio.sleep(0.3)  # past the cache
        status, body = await get(probes.port, "/readyz")
        assert status == 503 and body["status"] == "critical"
        assert body["summary"] == f"CRITICAL: consumer {stream} > worker: missing"
        assert (await get(probes.port, "/healthz"))[0] == 200  # alive: do not restart it
        await bus.ensure_streams()
        await asyncio.sleep(0.3)
        assert (await get(probes.port, "/readyz"))[0] == 200


async def test_a_warning_is_still_ready(declared: tuple[natsbus.Bus, str]) -> None:
    bus, stream = declared
    await bus.publish(f"{stream.lower()}.x", {"n": 1})
    async with await bus.serve_probes(0, "127.0.0.1", lag_warn=1) as probes:
        status, body = await get(probes.port, "/readyz")
        assert status == 200 and body["status"] == "warning"


async def test_a_probe_storm_costs_one_check(declared: tuple[natsbus.Bus, str]) -> None:
    bus, _ = declared
    async with await bus.serve_probes(0, "127.0.0.1", cache=5.0) as probes:
        answers = await asyncio.gather(*(get(probes.port, "/readyz") for _ in range(50)))
    assert {status for status, _ in answers} == {200}
    # one check answered them all: the same measured round trip in every body
    rtts = {json.dumps(body["checks"][0]) for _, body in answers}
    assert len(rtts) == 1


async def test_slow_and_garbage_clients_do_not_block_the_others(
    declared: tuple[natsbus.Bus, str],
) -> None:
    bus, _ = declared
    async with await bus.serve_probes(0, "127.0.0.1", client_timeout=0.5) as probes:
        silent = await asyncio.open_connection("127.0.0.1", probes.port)  # never sends
        half = await asyncio.open_connection("127.0.0.1", probes.port)
        half[1].write(b"GET /readyz HTTP/1.1\r\n")  # never finishes its headers
        t0 = time.monotonic()
        assert (await get(probes.port, "/healthz"))[0] == 200
        assert time.monotonic() - t0 < 0.5
        assert (await http(probes.port, b"hello\r\n\r\n"))[0] == 400
        huge = b"GET /readyz HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
        assert (await http(probes.port, huge))[0] == 400
        # the silent ones are hung up on after client_timeout
        assert await asyncio.wait_for(silent[0].read(), 3) == b""
        assert await asyncio.wait_for(half[0].read(), 3) == b""
        silent[1].close()
        half[1].close()


async def test_close_stops_listening(bus: natsbus.Bus) -> None:
    probes = await bus.serve_probes(0, "127.0.0.1")
    port = probes.port
    assert (await get(port, "/healthz"))[0] == 200
    await probes.close()
    await probes.close()  # idempotent
    assert not probes.serving
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_bad_thresholds_fail_at_start(bus: natsbus.Bus) -> None:
    with pytest.raises(natsbus.InvalidArgumentError, match="inactive_warn"):
        await bus.serve_probes(0, "127.0.0.1", inactive_warn="later")


async def test_healthz_is_503_while_the_server_is_down(fresh_server: NatsServer) -> None:
    async with natsbus.connect(fresh_server.url) as bus:
        async with await bus.serve_probes(0, "127.0.0.1", cache=0.1) as probes:
            assert (await get(probes.port, "/healthz"))[0] == 200
            fresh_server.stop()
            deadline = time.monotonic() + 10
            while bus.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            status, body = await get(probes.port, "/healthz")
            assert status == 503 and body["connected"] is False
            status, body = await get(probes.port, "/readyz")
            assert status == 503 and body["status"] == "critical"

            def fetch() -> int:
                try:
                    urllib.request.urlopen(probes.url + "/readyz", timeout=5)
                except urllib.error.HTTPError as exc:
                    return exc.code
                return 200

            assert await asyncio.to_thread(fetch) == 503
        fresh_server.start()  # close() waits for the server to confirm the last acks


def readme_block(heading: str) -> str:
    """The first ```python block under ``heading`` in the README."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readme_agent_serves_its_probes(fresh_server: NatsServer, tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(readme_block("## Health checks and probes"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "NATS_URL": fresh_server.url, "PROBE_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 20)).decode() for _ in range(3)]
        assert lines[0].startswith(f"probes on http://127.0.0.1:{port}/healthz")
        assert lines[1:] == ["healthy\n", "OK: 1 stream, 1 consumer checked\n"]
        status, body = await get(port, "/readyz")
        assert status == 200 and body["status"] == "ok"
        lag = next(c for c in body["checks"] if c["name"] == "lag")
        assert (lag["warn"], lag["crit"]) == (1000, 10000)  # declared in the topology
        assert (await get(port, "/healthz"))[0] == 200
        async with natsbus.connect(fresh_server.url) as bus:
            await bus.publish("tasks.cpu", {"id": 1})
        assert "task" in (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
