"""The pytest plugin (issue 14, part 6): a fresh project's tests get real servers and a bus.

Runs pytest in a subprocess on a throwaway project that has no conftest of its own, so only
the installed plugin (the ``pytest11`` entry point) provides the fixtures.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT_TESTS = """
import pytest
import natsbus
from natsbus.testing import NatsCluster, NatsServer


def test_servers_are_real(nats_server: NatsServer, fresh_nats_server: NatsServer) -> None:
    assert nats_server.is_running() and fresh_nats_server.is_running()
    assert nats_server.url != fresh_nats_server.url


async def test_the_bus_has_the_ini_topology_applied(bus: natsbus.Bus) -> None:
    ack = await bus.publish("orders.created", {"id": 1})
    assert ack.stream == "ORDERS"
    info = await bus.consumer_info("ORDERS", "billing")
    assert info["config"]["durable_name"] == "billing"


@pytest.mark.natsbus_topology("other.yaml")
async def test_a_marker_picks_another_topology(bus: natsbus.Bus) -> None:
    assert (await bus.publish("audit.x", b"1")).stream == "AUDIT"


def test_the_cluster_has_three_nodes(nats_cluster: NatsCluster) -> None:
    assert len(nats_cluster) == 3 and nats_cluster.is_running()
"""


def test_the_plugin_serves_a_project_without_conftest(tmp_path: Path) -> None:
    (tmp_path / "test_project.py").write_text(PROJECT_TESTS)
    (tmp_path / "topology.yaml").write_text(
        textwrap.dedent(
            """
            streams:
              ORDERS:
                subjects: [orders.>]
                storage: memory
                consumers:
                  billing: {ack_policy: explicit}
            """
        )
    )
    (tmp_path / "other.yaml").write_text(
        "streams:\n  AUDIT:\n    subjects: [audit.>]\n    storage: memory\n"
    )
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "natsbus_topology = topology.yaml\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "4 passed" in out.stdout
