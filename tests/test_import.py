"""``natsbus import`` (issue 14, part 2): init scripts and natscli JSON into one topology.

The first case is OpsConductor-Pulse's own init-streams.sh (tests/data), read as written:
line continuations, ``2>/dev/null || true``, ``--defaults``, connection flags, a stream update,
and a consumer flag given to ``stream add``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import natsbus
from natsbus.testing import NatsServer

DATA = Path(__file__).resolve().parent / "data"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbus", *args], capture_output=True, text=True, timeout=60
    )


def test_the_pulse_init_script_becomes_a_topology(tmp_path: Path) -> None:
    out_file = tmp_path / "topology.yaml"
    out = cli("import", str(DATA / "pulse-init-streams.sh"), "-o", str(out_file))
    # Two things in the script can not be mapped: exit 1, the file is written anyway.
    assert out.returncode == 1, out.stderr
    script = str(DATA / "pulse-init-streams.sh")
    warnings = [line for line in out.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 2, out.stderr
    assert (
        f"{script}:73: --max-deliver 3 given to `nats stream add ROUTES` is a consumer setting"
        in warnings[0]
    )
    assert f"{script}:90: --wait of `nats consumer add` is not mapped" in warnings[1]
    topology = natsbus.Topology.load(out_file)
    assert topology.streams == ["TELEMETRY", "SHADOW", "COMMANDS", "ROUTES"]
    assert topology.consumers == [("TELEMETRY", "ingest-workers"), ("ROUTES", "route-delivery")]
    streams = topology.to_dict()["streams"]
    telemetry = streams["TELEMETRY"]
    assert telemetry["max_msgs_per_subject"] == 100000
    assert telemetry["deny_delete"] is False and telemetry["deny_purge"] is False
    assert streams["ROUTES"]["retention"] == "workqueue"
    assert streams["ROUTES"]["consumers"]["route-delivery"]["max_ack_pending"] == 100


async def test_the_imported_topology_applies_like_the_script(
    fresh_server: NatsServer, tmp_path: Path
) -> None:
    out_file = tmp_path / "topology.yaml"
    cli("import", str(DATA / "pulse-init-streams.sh"), "-o", str(out_file))
    async with natsbus.connect(fresh_server.url) as bus:
        plan = await bus.ensure_streams(out_file)
        assert len(plan.by_action("create")) == 6
        info = await bus.stream_info("TELEMETRY")
        assert info["config"]["max_bytes"] == 1024**3
        assert info["config"]["duplicate_window"] == 120 * 10**9
        assert not (await bus.plan(out_file)).pending


def test_natscli_json_in_every_shape(tmp_path: Path) -> None:
    stream_info = tmp_path / "orders.json"  # `nats stream info ORDERS --json`
    stream_info.write_text(
        json.dumps(
            {
                "config": {"name": "ORDERS", "subjects": ["orders.>"], "max_age": 3600 * 10**9},
                "state": {"messages": 5},
            }
        )
    )
    consumer_info = tmp_path / "billing.json"  # `nats consumer info ORDERS billing --json`
    consumer_info.write_text(
        json.dumps(
            {
                "stream_name": "ORDERS",
                "name": "billing",
                "config": {"durable_name": "billing", "ack_policy": "explicit", "max_deliver": 5},
                "num_pending": 0,
            }
        )
    )
    listed = tmp_path / "configmap.json"  # a ConfigMap's {"streams": [...]}
    listed.write_text(
        json.dumps({"streams": [{"name": "AUDIT", "subjects": ["audit.>"]}, {"name": "LOGS"}]})
    )
    out = cli("import", str(stream_info), str(consumer_info), str(listed))
    assert out.returncode == 0, out.stderr
    topology = natsbus.Topology.from_text(out.stdout, "yaml")
    assert topology.streams == ["ORDERS", "AUDIT", "LOGS"]
    assert topology.consumers == [("ORDERS", "billing")]


def test_environment_references_are_kept_for_the_topology_to_substitute(tmp_path: Path) -> None:
    script = tmp_path / "init.sh"
    script.write_text('nats stream add R --subjects "r.>" --replicas ${NATS_REPLICAS:-1}\n')
    out = cli("import", str(script))
    assert out.returncode == 0, out.stderr
    assert "replicas: ${NATS_REPLICAS:-1}" in out.stdout
    topology = natsbus.Topology.from_text(out.stdout, "yaml")
    assert topology.to_dict()["streams"]["R"]["num_replicas"] == 1


def test_a_stream_given_twice_and_unknown_flags_are_reported(tmp_path: Path) -> None:
    script = tmp_path / "init.sh"
    script.write_text(
        'nats str add A --subjects "a.>" --storage memory --mirror-ish X --defaults || true\n'
        "nats consumer add A w --ack explicit --max-msgs 5\n"
    )
    out = cli("import", str(script))
    assert out.returncode == 1
    assert f"{script}:1: --mirror-ish of `nats stream add` is not mapped" in out.stderr
    assert (
        f"{script}:2: --max-msgs 5 given to `nats consumer add` is a stream setting" in out.stderr
    )
