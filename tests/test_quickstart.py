"""The README's quickstart runs as written (it is examples/quickstart.py)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_runs_against_an_embedded_server() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "started a throwaway nats-server" in text
    assert "+ create stream ORDERS" in text
    assert 'stored PubAck(stream="ORDERS", seq=1, duplicate=False)' in text
    assert "pipelined [2, 3, 4, 5]" in text
    consumed = re.findall(r"seq=(\d+) delivered=1 Order\(", text)
    assert consumed == ["1", "2", "3", "4", "5"]
    assert "healthy Health(connected=True" in text


def test_quickstart_in_readme_matches_the_example() -> None:
    readme = pathlib.Path(ROOT, "README.md").read_text(encoding="utf-8")
    example = pathlib.Path(ROOT, "examples", "quickstart.py").read_text(encoding="utf-8")
    block = readme.split("## Quickstart", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    # The README shows the example without its module docstring and the
    # line that announces the embedded server.
    for line in block.strip().splitlines():
        assert line.rstrip() in example, f"README line not in examples/quickstart.py: {line!r}"
