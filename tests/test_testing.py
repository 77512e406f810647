"""natsbus.testing and the test fixtures, proven against real nats-server processes with nats-py.

nats-py is a dev-only dependency: without it this module is skipped. The fixtures come from
``support.fixtures`` (imported by ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from natsbus.testing import (
    NatsCluster,
    NatsServer,
    ServerBinaryNotFoundError,
    ServerStartError,
    find_server_binary,
)
from support.auth import decode_jwt_claims, make_nkey_user
from support.certs import CertFiles
from support.fixtures import TOKEN, USER, USER_PASSWORD, CredsServer, NkeyServer

nats = pytest.importorskip("nats")


async def _quiet(_: Exception) -> None:
    """Error callback that keeps nats-py from logging expected failures."""


async def connect(url: str | list[str], **options: Any) -> Any:
    return await nats.connect(
        url,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=2,
        error_cb=_quiet,
        **options,
    )


async def connect_error(url: str, **options: Any) -> BaseException | None:
    """Try to connect; return the error, or None (and close) when it worked."""
    try:
        nc = await connect(url, **options)
    except Exception as exc:
        return exc
    await nc.close()
    return None


async def publish(js: Any, subject: str, data: bytes, deadline: float = 10.0) -> Any:
    """Publish, retrying while a replicated stream has no leader yet (just created, or its
    leader's node was stopped): the server answers "no responders" until one is elected."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    while True:
        try:
            return await js.publish(subject, data, timeout=5)
        except nats.js.errors.NoStreamResponseError:
            if loop.time() > give_up:
                raise
            await asyncio.sleep(0.1)


async def roundtrip(nc: Any, stream: str, replicas: int = 1) -> None:
    """Create a file-storage stream, publish to it and read the message back."""
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"], num_replicas=replicas)
    ack = await publish(js, f"{stream.lower()}.one", b"hello")
    assert ack.stream == stream
    msg = await js.get_msg(stream, ack.seq)
    assert msg.data == b"hello"


def monitor(server: NatsServer, path: str) -> Any:
    with urllib.request.urlopen(server.monitor_url + path, timeout=5) as resp:
        return json.load(resp)


# -- binary discovery --------------------------------------------------------------------------


def test_find_server_binary_prefers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    found = find_server_binary()
    assert os.access(found, os.X_OK)
    monkeypatch.setenv("NATS_SERVER_BIN", found)
    assert find_server_binary() == found


def test_find_server_binary_rejects_bad_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_SERVER_BIN", "/nonexistent/nats-server")
    with pytest.raises(ServerBinaryNotFoundError, match="NATS_SERVER_BIN"):
        find_server_binary()


def test_missing_binary_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NATS_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("sysconfig.get_path", lambda *args, **kwargs: str(tmp_path))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    with pytest.raises(ServerBinaryNotFoundError, match=r"natsbus\[server\]"):
        find_server_binary()


# -- single server lifecycle -------------------------------------------------------------------


async def test_publish_and_read_back(nats_server: NatsServer, nats_url: str) -> None:
    assert nats_url == nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    assert monitor(nats_server, "/varz")["jetstream"]["config"]["store_dir"].startswith(
        nats_server.store_dir
    )
    nc = await connect(nats_url)
    try:
        await roundtrip(nc, "ROUNDTRIP")
    finally:
        await nc.close()


async def test_restart_keeps_file_storage(fresh_server: NatsServer) -> None:
    port, store = fresh_server.port, fresh_server.store_dir
    nc = await connect(fresh_server.url)
    js = nc.jetstream()
    await js.add_stream(name="DURABLE", subjects=["durable.>"])
    for i in range(3):
        await js.publish("durable.x", f"m{i}".encode())
    await nc.close()

    await asyncio.get_running_loop().run_in_executor(None, fresh_server.restart)
    assert fresh_server.is_running()
    assert (fresh_server.port, fresh_server.store_dir) == (port, store)

    nc = await connect(fresh_server.url)
    try:
        info = await nc.jetstream().stream_info("DURABLE")
        assert info.state.messages == 3
        assert (await nc.jetstream().get_msg("DURABLE", 3)).data == b"m2"
    finally:
        await nc.close()


def test_stop_reaps_process_and_removes_temp_dir() -> None:
    server = NatsServer()
    server.start()
    process = server._process
    assert process is not None
    workdir = Path(server.store_dir).parent
    assert workdir.is_dir()
    server.stop()
    assert not server.is_running()
    assert process.returncode is not None  # waited for: no zombie
    assert not workdir.exists()


def test_given_store_dir_is_kept(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with NatsServer(store_dir=store) as server:
        assert server.store_dir == str(store)
    assert store.is_dir()  # a store dir the caller gave is never removed


def test_stop_without_cleanup_then_start_resumes() -> None:
    server = NatsServer()
    try:
        server.start()
        store = Path(server.store_dir)
        server.stop(cleanup=False)
        assert store.is_dir() and not server.is_running()
        server.start()
        assert server.store_dir == str(store)
    finally:
        server.stop()
    assert not store.exists()


async def test_async_context_manager() -> None:
    async with NatsServer(jetstream=False) as server:
        assert server.is_running()
        nc = await connect(server.url)
        assert nc.is_connected
        await nc.close()
    assert not server.is_running()


def test_start_failure_shows_log_tail_without_secrets() -> None:
    server = NatsServer(user="agent", password="do-not-leak-me", config="this is { not valid")
    with pytest.raises(ServerStartError) as info:
        server.start(timeout=5)
    message = str(info.value)
    assert "log tail" in message
    assert "do-not-leak-me" not in message
    assert "do-not-leak-me" not in repr(server)
    assert not server.is_running()
    server.stop()


def test_taken_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # A port the caller chose is used as given: the error says why it failed.
        with pytest.raises(ServerStartError, match="address already in use"):
            NatsServer(port=port).start(timeout=5)
        # An auto-picked port that someone else grabbed in the meantime is replaced.
        server = NatsServer()
        server._port = port
        with server:
            assert server.port != port and server.is_running()


def test_repr_hides_token() -> None:
    server = NatsServer(token="very-secret-token")
    assert "very-secret-token" not in repr(server)


# -- authentication ----------------------------------------------------------------------------


async def test_userpass_server(userpass_server: NatsServer) -> None:
    url = userpass_server.url
    assert "Authorization" in str(await connect_error(url))
    assert "Authorization" in str(await connect_error(url, user=USER, password="wrong"))
    assert await connect_error(url, user=USER, password=USER_PASSWORD) is None


async def test_token_server(token_server: NatsServer) -> None:
    url = token_server.url
    assert "Authorization" in str(await connect_error(url))
    assert "Authorization" in str(await connect_error(url, token="wrong"))
    assert await connect_error(url, token=TOKEN) is None


async def test_nkey_server(nkey_server: NkeyServer) -> None:
    server, seed = nkey_server
    other_seed, _ = make_nkey_user()
    assert "Authorization" in str(await connect_error(server.url))
    assert "Authorization" in str(await connect_error(server.url, nkeys_seed_str=other_seed))
    assert await connect_error(server.url, nkeys_seed_str=seed) is None


async def test_creds_server(creds_server: CredsServer) -> None:
    server, creds = creds_server
    assert "-----BEGIN NATS USER JWT-----" in creds.read_text()
    assert "Authorization" in str(await connect_error(server.url))
    assert "Authorization" in str(await connect_error(server.url, user="x", password="y"))
    nc = await connect(server.url, user_credentials=str(creds))
    try:
        await roundtrip(nc, "CREDS")  # the account has JetStream enabled
    finally:
        await nc.close()


def test_jwt_claims_shape(creds_server: CredsServer) -> None:
    jwt = creds_server.creds.read_text().splitlines()[1]
    claims = decode_jwt_claims(jwt)
    assert claims["nats"]["type"] == "user"
    assert claims["sub"].startswith("U") and claims["iss"].startswith("A")
    assert claims["jti"] and claims["iat"] > 0


# -- TLS ---------------------------------------------------------------------------------------


def client_context(files: CertFiles, *, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(files.ca))
    if with_cert:
        context.load_cert_chain(str(files.client_cert), str(files.client_key))
    return context


async def test_tls_server(tls_server: NatsServer, tls_files: CertFiles) -> None:
    assert tls_server.url.startswith("tls://127.0.0.1:")
    # The server certificate is not trusted without the test CA.
    assert await connect_error(tls_server.url, tls=ssl.create_default_context()) is not None
    nc = await connect(tls_server.url, tls=client_context(tls_files))
    try:
        await roundtrip(nc, "TLS")
    finally:
        await nc.close()


async def test_mtls_server(mtls_server: NatsServer, tls_files: CertFiles) -> None:
    assert await connect_error(mtls_server.url, tls=client_context(tls_files)) is not None
    context = client_context(tls_files, with_cert=True)
    assert await connect_error(mtls_server.url, tls=context) is None


async def test_tls_handshake_first(tls_first_server: NatsServer, tls_files: CertFiles) -> None:
    context = client_context(tls_files)
    # A client that waits for INFO before the handshake never gets one.
    assert await connect_error(tls_first_server.url, tls=context) is not None
    nc = await connect(tls_first_server.url, tls=context, tls_handshake_first=True)
    try:
        await roundtrip(nc, "TLSFIRST")
    finally:
        await nc.close()


# -- cluster -----------------------------------------------------------------------------------


async def test_cluster_has_three_peers_and_r3_stream(nats_cluster: NatsCluster) -> None:
    assert len(nats_cluster.urls) == 3
    assert nats_cluster.url == ",".join(nats_cluster.urls)
    names = {monitor(node, "/varz")["server_name"] for node in nats_cluster.nodes}
    assert names == {"n1", "n2", "n3"}
    meta = monitor(nats_cluster.nodes[0], "/jsz")["meta_cluster"]
    assert meta["cluster_size"] == 3

    nc = await connect(nats_cluster.urls)  # nats-py wants a list, not a comma-joined string
    try:
        await roundtrip(nc, "REPLICATED", replicas=3)
        info = await nc.jetstream().stream_info("REPLICATED")
        assert info.config.num_replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
    finally:
        await nc.close()


async def test_cluster_survives_one_node_down(nats_cluster: NatsCluster) -> None:
    loop = asyncio.get_running_loop()
    # The session's cluster may have been busy: placing R3 needs every peer current.
    await loop.run_in_executor(None, nats_cluster.wait_settled)
    nc = await connect(nats_cluster.urls[1])
    try:
        js = nc.jetstream()
        await js.add_stream(name="QUORUM", subjects=["quorum.>"], num_replicas=3)
        await loop.run_in_executor(None, nats_cluster.stop_node, 0)
        assert not nats_cluster.nodes[0].is_running()
        ack = await publish(js, "quorum.x", b"still here")
        assert ack.stream == "QUORUM"
    finally:
        await nc.close()
        await loop.run_in_executor(None, nats_cluster.start_node, 0)
    assert nats_cluster.is_running()
    nc = await connect(nats_cluster.urls[0])
    try:
        info = await nc.jetstream().stream_info("QUORUM")
        assert info.state.messages == 1
    finally:
        await nc.close()
