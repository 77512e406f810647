"""Request/reply and serve."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from conftest import unique

import natsbus


@dataclasses.dataclass
class Quote:
    symbol: str
    price: float


async def test_sync_and_async_handlers_typed_like_publish(bus: natsbus.Bus) -> None:
    subject = unique("svc.")

    async def async_handler(msg: natsbus.Message) -> Quote:
        await asyncio.sleep(0)
        return Quote(msg.data["symbol"], 1.5)

    async with await bus.serve(subject, async_handler) as svc:
        reply = await bus.request(subject, {"symbol": "NATS"})
        assert reply.data == {"symbol": "NATS", "price": 1.5}
        assert reply.headers["Content-Type"] == "application/json"
        assert svc.handled == 1

    raw_subject = unique("raw.")
    async with await bus.serve(raw_subject, lambda m: m.payload[::-1]):
        reply = await bus.request(raw_subject, b"abc")
        assert reply.payload == b"cba"
        empty = await bus.request(raw_subject)
        assert empty.payload == b""


async def test_request_headers_reach_the_handler(bus: natsbus.Bus) -> None:
    subject = unique("hdr.")
    async with await bus.serve(subject, lambda m: {"trace": m.headers.get("Trace")}):
        reply = await bus.request(subject, b"", headers={"Trace": "t-9"})
        assert reply.data == {"trace": "t-9"}


async def test_no_responders_raises_at_once(bus: natsbus.Bus) -> None:
    start = time.monotonic()
    with pytest.raises(natsbus.NoRespondersError) as err:
        await bus.request(unique("nobody."), {"q": 1}, timeout=10)
    assert time.monotonic() - start < 1.0
    assert not isinstance(err.value, natsbus.NoStreamError)


async def test_request_timeout(bus: natsbus.Bus) -> None:
    subject = unique("slow.")

    async def slow(msg: natsbus.Message) -> bytes:
        await asyncio.sleep(2)
        return b"late"

    svc = await bus.serve(subject, slow)
    try:
        start = time.monotonic()
        with pytest.raises(natsbus.TimeoutError) as err:
            await bus.request(subject, b"", timeout=0.3)
        assert isinstance(err.value, TimeoutError)
        assert time.monotonic() - start < 1.5
    finally:
        await svc.stop()


async def test_handler_error_replies_with_error_headers(bus: natsbus.Bus) -> None:
    subject = unique("err.")

    def broken(msg: natsbus.Message) -> None:
        raise ValueError("bad input: no symbol")

    async with await bus.serve(subject, broken) as svc:
        with pytest.raises(natsbus.ServiceError) as caught:
            await bus.request(subject, {})
        reply = caught.value.reply
        assert reply.headers["Nats-Service-Error-Code"] == "500"
        assert "bad input: no symbol" in reply.headers["Nats-Service-Error"]
        assert svc.failed == 1


async def test_queue_group_shares_requests(nats_url: str, bus: natsbus.Bus) -> None:
    subject = unique("rca.")
    hits = {"a": 0, "b": 0}

    def handler_for(name: str):  # type: ignore[no-untyped-def]
        def h(msg: natsbus.Message) -> str:
            hits[name] += 1
            return name

        return h

    async with natsbus.connect(nats_url) as other:
        s1 = await bus.serve(subject, handler_for("a"), queue="rca")
        s2 = await other.serve(subject, handler_for("b"), queue="rca")
        answers = [(await bus.request(subject, b"")).payload for _ in range(60)]
        await s1.stop()
        await s2.stop()
    assert len(answers) == 60
    assert hits["a"] + hits["b"] == 60
    assert hits["a"] > 0 and hits["b"] > 0


async def test_serve_rejects_non_callable(bus: natsbus.Bus) -> None:
    with pytest.raises(natsbus.InvalidArgumentError, match="callable"):
        await bus.serve("x.y", "not callable")  # type: ignore[arg-type]


async def test_serve_warns_when_a_stream_captures_the_subject(
    bus: natsbus.Bus, make_stream: object, caplog: pytest.LogCaptureFixture
) -> None:
    stream, p = await make_stream()  # type: ignore[operator]
    with caplog.at_level("WARNING", logger="natsbus"):
        svc = await bus.serve(f"{p}.rpc", lambda m: b"ok")
        await svc.stop()
    assert any(stream in r.getMessage() and "PubAck" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="natsbus"):
        svc = await bus.serve(unique("free."), lambda m: b"ok")
        await svc.stop()
    assert not caplog.records
