"""The stubs make readers generic in their model: mypy sees ``msg.data`` as
the model under ``model=Task`` (checked by running mypy on user code)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

USER_CODE = """
import dataclasses
import natsbus

@dataclasses.dataclass
class Task:
    id: int

async def main(bus: natsbus.Bus) -> None:
    async with bus.consume("S", "c", model=Task) as tasks:
        async for msg in tasks:
            reveal_type(msg.data)
    plain = bus.consume("S", "c")
    first = await plain.next()
    if first is not None:
        reveal_type(first.data)
    async with bus.replay("S", model=Task) as r:
        async for m in r:
            reveal_type(m.data)
    async with bus.subscribe("a.>", model=Task) as sub:
        async for s in sub:
            reveal_type(s.data)
    reply = await bus.request("svc", {}, model=Task)
    reveal_type(reply.data)
    stored = await bus.get_message("S", seq=1, model=Task)
    reveal_type(stored.data)

    async def handle(msg: natsbus.Message[Task]) -> None:
        reveal_type(msg.data.id)

    worker = bus.worker("S", "c", handle, model=Task)
    reveal_type(worker)
    typed: natsbus.Message[Task] = stored
    typed.data.nope
"""


def test_readers_are_generic_in_their_model(tmp_path: Path) -> None:
    source = tmp_path / "user_code.py"
    source.write_text(textwrap.dedent(USER_CODE))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--strict", str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    revealed = [
        line.split("Revealed type is ", 1)[1]
        for line in out.splitlines()
        if "Revealed type" in line
    ]
    assert revealed == [
        '"user_code.Task"',
        '"Any"',
        '"user_code.Task"',
        '"user_code.Task"',
        '"user_code.Task"',
        '"user_code.Task"',
        '"int"',
        '"natsbus._worker.Worker[user_code.Task]"',
    ], out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 1 and '"Task" has no attribute "nope"' in errors[0], out


OPERATOR_CODE = """
import natsbus

async def on_event(event: natsbus.Event) -> None:
    print(event.kind, event.server, event.message, event.time)

async def main() -> int:
    async with natsbus.connect(wait=30, heal=True, on_event=on_event) as bus:
        plan = await bus.ensure_streams("topology.yaml", create_only=True)
        outcomes = [(c.target, c.outcome, c.error) for c in plan.changes]
        text: str = plan.render(unmanaged=True, changes_only=False)
        health = await bus.health()
        problems: list[str] = health.problems
        ok: bool = health.to_dict()["ok"] and bus.heals
        report = await bus.check(lag_warn=1000, lag_crit=10_000, inactive_crit="5m")
        status: str = report.status
        async with await bus.serve_probes(0, host="127.0.0.1") as probes:
            port: int = probes.port
        async for event in bus.events():
            kind: str = event.kind
            break
        return report.exit_code
"""


def test_the_operability_api_type_checks_under_strict_mypy(tmp_path: Path) -> None:
    source = tmp_path / "operator_code.py"
    source.write_text(textwrap.dedent(OPERATOR_CODE))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--strict", str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout
