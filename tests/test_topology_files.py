"""Topologies in several files, directories and stdin (issue 14, part 3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import natsbus
from natsbus.testing import NatsServer

ORDERS = """\
streams:
  ORDERS:
    subjects: [orders.>]
    storage: memory
    consumers:
      billing: {ack_policy: explicit}
"""
AUDIT = """\
streams:
  AUDIT:
    subjects: [audit.>]
    storage: memory
"""


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbus", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def test_files_and_directories_are_merged(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "10-orders.yaml").write_text(ORDERS)
    (tmp_path / "conf" / "20-audit.json").write_text(
        '{"streams": {"AUDIT": {"subjects": ["audit.>"], "storage": "memory"}}}'
    )
    (tmp_path / "conf" / "README.md").write_text("not a topology")
    extra = tmp_path / "extra.yaml"
    extra.write_text("streams:\n  EXTRA:\n    subjects: [extra.>]\n")
    t = natsbus.Topology.load(tmp_path / "conf", extra)
    assert t.streams == ["ORDERS", "AUDIT", "EXTRA"]
    assert t.consumers == [("ORDERS", "billing")]
    out = cli("validate", str(tmp_path / "conf"), str(extra))
    assert out.returncode == 0, out.stderr
    assert "3 streams" in out.stdout


def test_a_stream_in_two_files_names_both_places(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(ORDERS)
    b.write_text(AUDIT + "  ORDERS:\n    subjects: [more.>]\n")
    with pytest.raises(natsbus.TopologyError) as raised:
        natsbus.Topology.load(a, b)
    (problem,) = raised.value.problems
    assert (problem.file, problem.line, problem.field) == (str(b), 5, "streams.ORDERS")
    assert f"also declared in {a}:2" in problem.message


def test_problems_of_merged_files_name_their_own_file_and_line(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(ORDERS)
    b.write_text("streams:\n  SHADOW:\n    subjects: [orders.eu]\n")
    with pytest.raises(natsbus.TopologyError) as raised:
        natsbus.Topology.load(a, b)
    (problem,) = raised.value.problems
    assert (problem.file, problem.line) == (str(b), 3)
    assert "overlaps" in problem.message and "ORDERS" in problem.message


def test_stdin_is_read_with_dash() -> None:
    out = cli("validate", "-", stdin=ORDERS)
    assert out.returncode == 0, out.stderr
    assert "1 stream" in out.stdout


def test_a_consumer_field_on_a_stream_says_where_it_belongs() -> None:
    with pytest.raises(natsbus.TopologyError) as raised:
        natsbus.Topology.from_text(
            "streams:\n  S:\n    subjects: [s.>]\n    max_deliver: 3\n", "yaml", "t.yaml"
        )
    (problem,) = raised.value.problems
    assert problem.field == "streams.S.max_deliver" and problem.line == 4
    assert "max_deliver is a consumer field, not a stream one" in problem.message


async def test_apply_and_connect_take_several_files(
    fresh_server: NatsServer, tmp_path: Path
) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(ORDERS)
    b.write_text(AUDIT)
    out = cli("apply", str(a), str(b), "-s", fresh_server.url)
    assert out.returncode == 0, out.stderr
    async with natsbus.connect(fresh_server.url, topology=[a, b]) as bus:
        await bus.verify()
        assert (await bus.publish("audit.x", b"1")).stream == "AUDIT"
