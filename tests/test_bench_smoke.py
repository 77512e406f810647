"""The benchmark still runs and verifies its results (small N; numbers mean nothing here)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_bench_runs_and_verifies() -> None:
    pytest.importorskip("nats")
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", "run.py"),
            "--quick",
            "--clients",
            "natsbus",
            "--only",
            "pub_sync,pub_many,pub_gather,consume,batches,worker,replay,memory",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for workload in (
        "pub_sync",
        "pub_many",
        "pub_gather",
        "consume",
        "batches",
        "worker",
        "replay",
    ):
        assert workload in out.stdout
    assert "FAILED" not in out.stdout
    assert "growth" in out.stdout  # the memory workload reported its RSS


def test_quick_scale_bench_runs(tmp_path: object) -> None:
    """bench/scale.py starts its servers, checks what it created, and prints every table."""
    pytest.importorskip("nats")
    import json
    import pathlib

    out_json = pathlib.Path(str(tmp_path)) / "scale.json"
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", "scale.py"),
            "--quick",
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for table in ("startup:", "create_r3:", "validate:"):
        assert table in out.stdout
    results = json.loads(out_json.read_text())
    assert [r["others"] for r in results["startup"]] == [0, 50]
    assert all(r["ratio"] > 0 for r in results["create_r3"])
