"""pytest fixtures that start real nats-server processes (loopback, free ports, temp dirs).

Import them into ``tests/conftest.py``; ``tests/`` is on ``sys.path`` there (rootdir-relative
"prepend" import mode, no ``tests/__init__.py``), so the package is ``support``::

    from support.fixtures import *  # noqa: F403

Session-scoped servers are shared by every test; use ``fresh_server`` for a clean server or one
that a test restarts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from natsbus.testing import NatsCluster, NatsServer, TLSFiles

from .auth import make_nkey_user, make_operator_setup, nkey_user_config
from .certs import CertFiles, make_certs

__all__ = [
    "TOKEN",
    "USER",
    "USER_PASSWORD",
    "CredsServer",
    "NkeyServer",
    "creds_server",
    "fresh_server",
    "mtls_server",
    "nats_cluster",
    "nats_server",
    "nats_url",
    "nkey_server",
    "tls_files",
    "tls_first_server",
    "tls_server",
    "token_server",
    "userpass_server",
]

USER = "agent"
USER_PASSWORD = "s3cret-pass"
TOKEN = "t0ken-s3cret-value"


class NkeyServer(NamedTuple):
    server: NatsServer
    seed: str


class CredsServer(NamedTuple):
    server: NatsServer
    creds: Path


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A JetStream server shared by the whole session."""
    with NatsServer() as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    """The URL of ``nats_server``."""
    return nats_server.url


@pytest.fixture
def fresh_server() -> Iterator[NatsServer]:
    """A JetStream server of its own for one test (clean state; may be restarted or stopped)."""
    with NatsServer() as server:
        yield server


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def tls_server(tls_files: CertFiles) -> Iterator[NatsServer]:
    """TLS (server certificate signed by ``tls_files.ca``); no client certificate required."""
    tls = TLSFiles(tls_files.server_cert, tls_files.server_key, ca_file=tls_files.ca)
    with NatsServer(tls=tls) as server:
        yield server


@pytest.fixture(scope="session")
def mtls_server(tls_files: CertFiles) -> Iterator[NatsServer]:
    """Mutual TLS: clients must present a certificate signed by ``tls_files.ca``."""
    tls = TLSFiles(tls_files.server_cert, tls_files.server_key, ca_file=tls_files.ca, verify=True)
    with NatsServer(tls=tls) as server:
        yield server


@pytest.fixture(scope="session")
def tls_first_server(tls_files: CertFiles) -> Iterator[NatsServer]:
    """TLS with ``handshake_first: true``: clients must start the TLS handshake at once."""
    tls = TLSFiles(
        tls_files.server_cert, tls_files.server_key, ca_file=tls_files.ca, handshake_first=True
    )
    with NatsServer(tls=tls) as server:
        yield server


@pytest.fixture(scope="session")
def userpass_server() -> Iterator[NatsServer]:
    """Requires user ``USER`` (``agent``) with password ``USER_PASSWORD``."""
    with NatsServer(user=USER, password=USER_PASSWORD) as server:
        yield server


@pytest.fixture(scope="session")
def token_server() -> Iterator[NatsServer]:
    """Requires the token ``TOKEN``."""
    with NatsServer(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="session")
def nkey_server() -> Iterator[NkeyServer]:
    """Admits one nkey user; yields ``(server, seed)``."""
    seed, public_key = make_nkey_user()
    with NatsServer(config=nkey_user_config(public_key)) as server:
        yield NkeyServer(server, seed)


@pytest.fixture(scope="session")
def creds_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CredsServer]:
    """Operator mode (JWT auth, JetStream-enabled account); yields ``(server, creds_path)``."""
    setup = make_operator_setup(tmp_path_factory.mktemp("creds"))
    with NatsServer(config=setup.server_config) as server:
        yield CredsServer(server, setup.creds_file)


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster (``n1``..``n3``) on loopback."""
    with NatsCluster(3) as cluster:
        yield cluster
