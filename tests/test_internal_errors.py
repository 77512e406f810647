"""A bug inside natsbus fails the awaiting task with an error that says so, never a hang."""

from __future__ import annotations

import asyncio

import pytest

import natsbus
from natsbus import _natsbus


async def test_a_panic_in_spawned_work_fails_the_awaiting_task(bus: natsbus.Bus) -> None:
    with pytest.raises(natsbus.NatsbusError) as err:
        await asyncio.wait_for(_natsbus._panic_in_runtime(bus._core, "boom at work"), timeout=5)
    text = str(err.value)
    assert type(err.value) is natsbus.NatsbusError
    assert "natsbus internal error" in text and "boom at work" in text
    assert "src/lib.rs" in text, "names where the work was started"
    assert "bug in natsbus" in text
    # The runtime and the bus carry on.
    await bus.flush()
    assert (await bus.health()).connected


async def test_many_panics_do_not_wedge_the_completion_queue(bus: natsbus.Bus) -> None:
    results = await asyncio.wait_for(
        asyncio.gather(
            *(_natsbus._panic_in_runtime(bus._core, "" if i % 2 else f"p{i}") for i in range(50)),
            return_exceptions=True,
        ),
        timeout=10,
    )
    failed = [r for r in results if isinstance(r, natsbus.NatsbusError)]
    assert len(failed) == 25 and results.count(None) == 25
