"""Shared fixtures: real nats-server processes (see tests/support/fixtures.py)."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Optional

import pytest

import natsbus
from support.fixtures import *  # noqa: F403

_names = itertools.count(1)


def unique(prefix: str = "S") -> str:
    """A stream/consumer/subject name no other test uses in this session."""
    return f"{prefix}{os.getpid()}_{next(_names)}"


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[natsbus.Bus]:
    """A bus connected to the session server, closed after the test."""
    b = await natsbus.connect(nats_url, name="pytest")
    try:
        yield b
    finally:
        await b.close()


StreamFactory = Callable[..., Awaitable[tuple[str, str]]]


async def create_stream(
    bus: natsbus.Bus,
    consumer: Optional[str] = None,
    *,
    consumer_config: Optional[dict[str, Any]] = None,
    storage: str = "memory",
    **config: Any,
) -> tuple[str, str]:
    """Create a stream with a unique name and subject prefix (``<name lowercased>.>``),
    and optionally a durable pull consumer. Returns ``(stream, subject_prefix)``."""
    name = unique("S")
    prefix = name.lower()
    body = {"name": name, "subjects": [f"{prefix}.>"], "storage": storage, **config}
    await bus.jetstream_api(f"STREAM.CREATE.{name}", body)
    if consumer is not None:
        cfg = {"durable_name": consumer, "ack_policy": "explicit", **(consumer_config or {})}
        await bus.jetstream_api(
            f"CONSUMER.CREATE.{name}.{consumer}", {"stream_name": name, "config": cfg}
        )
    return name, prefix


@pytest.fixture
def make_stream(bus: natsbus.Bus) -> StreamFactory:
    """``create_stream`` on the ``bus`` fixture."""

    async def make(*args: Any, **kwargs: Any) -> tuple[str, str]:
        return await create_stream(bus, *args, **kwargs)

    return make


async def stored(bus: natsbus.Bus, stream: str, seq: int) -> tuple[str, bytes, dict[str, str]]:
    """What the stream holds at ``seq``: subject, payload bytes, headers."""
    import base64

    got = await bus.jetstream_api(f"STREAM.MSG.GET.{stream}", {"seq": seq})
    msg = got["message"]
    data = base64.b64decode(msg.get("data", "")) if msg.get("data") else b""
    headers: dict[str, str] = {}
    if msg.get("hdrs"):
        for line in base64.b64decode(msg["hdrs"]).decode().split("\r\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip()] = v.strip()
    return msg["subject"], data, headers


async def message_count(bus: natsbus.Bus, stream: str) -> int:
    info = await bus.stream_info(stream)
    return int(info["state"]["messages"])


async def consumer_state(bus: natsbus.Bus, stream: str, durable: str) -> dict[str, int]:
    """What a user checks of a consumer: pending, ack pending, redelivered."""
    info = await bus.consumer_info(stream, durable)
    return {
        "pending": info["num_pending"],
        "ack_pending": info["num_ack_pending"],
        "redelivered": info["num_redelivered"],
    }
