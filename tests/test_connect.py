"""connect(): servers, every auth mode, TLS, failures within connect_timeout, no secrets."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from typing import Any

import pytest
from conftest import create_stream

import natsbus
from natsbus.testing import NatsServer
from support.certs import CertFiles
from support.fixtures import TOKEN, USER, USER_PASSWORD, CredsServer, NkeyServer


def publish_conn(bus: natsbus.Bus) -> Any:
    """The bus's loop-driven publish connection, if one is attached."""
    return bus._core.publish_connection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def roundtrip(bus: natsbus.Bus, wait_direct: float = 0.0) -> None:
    """Prove the connection works end to end (core request through the server),
    and that the publish connection opened with the same settings and carries
    a JetStream publish."""
    svc = await bus.serve("conn.check", lambda m: {"pong": m.data})
    try:
        reply = await bus.request("conn.check", {"n": 1}, timeout=5)
        assert reply.data == {"pong": {"n": 1}}
    finally:
        await svc.stop()
    deadline = time.monotonic() + wait_direct
    while (
        not (publish_conn(bus) is not None and publish_conn(bus).ready)
        and time.monotonic() < deadline
    ):
        await _sleep(0.05)
    direct = publish_conn(bus)
    assert direct is not None and direct.ready, "the publish connection did not open"
    stream, prefix = await create_stream(bus)
    try:
        ack = await bus.publish(f"{prefix}.check", {"n": 1})
        assert (ack.stream, ack.seq) == (stream, 1)
        assert publish_conn(bus) is direct and direct.pending == 0
    finally:
        await bus.jetstream_api(f"STREAM.DELETE.{stream}")


async def test_awaitable_and_context_manager(nats_url: str) -> None:
    bus = await natsbus.connect(nats_url)
    assert bus.connected and not bus.closed
    await roundtrip(bus)
    await bus.close()
    assert bus.closed and not bus.connected
    async with natsbus.connect(nats_url) as b2:
        assert b2.connected
        held = b2
    assert held.closed
    b3 = await natsbus.connect(nats_url)
    async with b3 as same:
        assert same is b3 and b3.connected
    assert b3.closed


async def test_nats_url_env_and_server_lists(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_URL", nats_url)
    async with natsbus.connect() as bus:
        await roundtrip(bus)
    dead = f"nats://127.0.0.1:{free_port()}"
    # Comma list and Python list: a dead first server is skipped.
    async with natsbus.connect(f"{dead}, {nats_url}") as bus:
        await roundtrip(bus)
    async with natsbus.connect([dead, nats_url]) as bus:
        assert "127.0.0.1" in bus.servers
        await roundtrip(bus)


async def test_connection_name_shows_in_monitoring(nats_server: NatsServer) -> None:
    async with natsbus.connect(nats_server.url, name="metric-agent") as bus:
        assert bus.name == "metric-agent"
        with urllib.request.urlopen(f"{nats_server.monitor_url}/connz") as r:
            connz = json.load(r)
        names = [c.get("name") for c in connz["connections"]]
        assert "metric-agent" in names


async def test_nothing_listening_raises_connect_error_fast() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(natsbus.ConnectError) as err:
        await natsbus.connect(url, connect_timeout=2.0)
    assert time.monotonic() - start < 2.5
    assert isinstance(err.value, ConnectionError)
    assert "127.0.0.1" in str(err.value)


async def test_blackhole_times_out_within_connect_timeout() -> None:
    # A socket that accepts but never speaks NATS.
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        port = lsock.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(natsbus.ConnectError):
            await natsbus.connect(f"nats://127.0.0.1:{port}", connect_timeout=1.0)
        assert time.monotonic() - start < 2.0


async def test_user_password(userpass_server: NatsServer) -> None:
    async with natsbus.connect(userpass_server.url, user=USER, password=USER_PASSWORD) as bus:
        await roundtrip(bus)
    start = time.monotonic()
    with pytest.raises(natsbus.AuthError) as err:
        await natsbus.connect(
            userpass_server.url, user=USER, password="wrong-password-123", connect_timeout=3
        )
    assert time.monotonic() - start < 3.5
    assert "wrong-password-123" not in str(err.value)
    assert "authorization" in str(err.value).lower()
    with pytest.raises(natsbus.AuthError):
        await natsbus.connect(userpass_server.url, connect_timeout=3)


async def test_user_password_from_env_and_url(
    userpass_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_USER", USER)
    monkeypatch.setenv("NATS_PASSWORD", USER_PASSWORD)
    async with natsbus.connect(userpass_server.url) as bus:
        await roundtrip(bus)
    monkeypatch.delenv("NATS_USER")
    monkeypatch.delenv("NATS_PASSWORD")
    url = f"nats://{USER}:{USER_PASSWORD}@127.0.0.1:{userpass_server.port}"
    async with natsbus.connect(url) as bus:
        assert USER_PASSWORD not in repr(bus)
        assert USER_PASSWORD not in bus.servers
        await roundtrip(bus)
    bad = f"nats://{USER}:not-it-456@127.0.0.1:{userpass_server.port}"
    with pytest.raises(natsbus.AuthError) as err:
        await natsbus.connect(bad, connect_timeout=3)
    assert "not-it-456" not in str(err.value)


async def test_token(token_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async with natsbus.connect(token_server.url, token=TOKEN) as bus:
        await roundtrip(bus)
    monkeypatch.setenv("NATS_TOKEN", TOKEN)
    async with natsbus.connect(token_server.url) as bus:
        await roundtrip(bus)
    with pytest.raises(natsbus.AuthError) as err:
        await natsbus.connect(token_server.url, token="bad-token-789", connect_timeout=3)
    assert "bad-token-789" not in str(err.value)


async def test_nkey_seed_inline_and_file(nkey_server: NkeyServer, tmp_path: object) -> None:
    import pathlib

    server, seed = nkey_server
    async with natsbus.connect(server.url, nkey_seed=seed) as bus:
        await roundtrip(bus)
    seed_file = pathlib.Path(str(tmp_path)) / "user.nk"
    seed_file.write_text(seed + "\n")
    async with natsbus.connect(server.url, nkey_seed=str(seed_file)) as bus:
        await roundtrip(bus)
    with pytest.raises(natsbus.AuthError):
        await natsbus.connect(server.url, connect_timeout=3)


async def test_creds_file_with_jetstream(creds_server: CredsServer) -> None:
    server, creds = creds_server
    async with natsbus.connect(server.url, creds=creds) as bus:
        await roundtrip(bus)
        await bus.jetstream_api("STREAM.CREATE.CREDS", {"name": "CREDS", "subjects": ["creds.>"]})
        ack = await bus.publish("creds.a", {"ok": True})
        assert (ack.stream, ack.seq) == ("CREDS", 1)
    with pytest.raises(natsbus.AuthError):
        await natsbus.connect(server.url, connect_timeout=3)
    with pytest.raises(natsbus.InvalidArgumentError, match="creds"):
        await natsbus.connect(server.url, creds="/no/such/file.creds")


async def test_tls_with_ca(tls_server: NatsServer, tls_files: CertFiles) -> None:
    async with natsbus.connect(tls_server.url, tls=natsbus.TLS(ca=tls_files.ca)) as bus:
        await roundtrip(bus)
    # Without our CA the server's certificate is not trusted.
    with pytest.raises(natsbus.ConnectError):
        await natsbus.connect(tls_server.url, connect_timeout=3)


async def test_mutual_tls(mtls_server: NatsServer, tls_files: CertFiles) -> None:
    tls = natsbus.TLS(ca=tls_files.ca, cert=tls_files.client_cert, key=tls_files.client_key)
    async with natsbus.connect(mtls_server.url, tls=tls) as bus:
        await roundtrip(bus)
    with pytest.raises(natsbus.ConnectError):
        await natsbus.connect(mtls_server.url, tls=natsbus.TLS(ca=tls_files.ca), connect_timeout=3)
    # Refused before anything is sent, by the one rule the CLI uses too.
    with pytest.raises(natsbus.InvalidArgumentError, match="both a certificate and its key"):
        await natsbus.connect(mtls_server.url, tls=natsbus.TLS(cert=tls_files.client_cert))


async def test_tls_handshake_first(tls_first_server: NatsServer, tls_files: CertFiles) -> None:
    tls = natsbus.TLS(ca=tls_files.ca, handshake_first=True)
    async with natsbus.connect(tls_first_server.url, tls=tls) as bus:
        await roundtrip(bus)
    with pytest.raises(natsbus.ConnectError):
        await natsbus.connect(
            tls_first_server.url, tls=natsbus.TLS(ca=tls_files.ca), connect_timeout=2
        )


async def test_conflicting_auth_is_refused(nats_url: str) -> None:
    with pytest.raises(natsbus.InvalidArgumentError, match="only one"):
        await natsbus.connect(nats_url, user="a", password="b", token="c")
    with pytest.raises(natsbus.InvalidArgumentError, match="go together"):
        await natsbus.connect(nats_url, user="a")


async def test_reconnects_after_server_restart(fresh_server: NatsServer) -> None:
    async with natsbus.connect(fresh_server.url) as bus:
        await roundtrip(bus)
        fresh_server.restart()
        for _ in range(100):
            if bus.connected:
                try:
                    await roundtrip(bus, wait_direct=10)
                    break
                except natsbus.NatsbusError:
                    pass
            await _sleep(0.1)
        else:
            pytest.fail("did not reconnect")


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


def test_a_bus_from_another_event_loop_says_so(nats_url: str) -> None:
    import asyncio

    async def make() -> natsbus.Bus:
        return await natsbus.connect(nats_url)

    bus = asyncio.run(make())

    async def use() -> None:
        with pytest.raises(natsbus.InvalidArgumentError, match="another event loop"):
            await bus.publish("x.y", b"1")

    asyncio.run(use())
