"""Typed publish: encoding, headers, msg-id dedupe, expectations, errors."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import time
import uuid

import pydantic
import pytest
from conftest import StreamFactory, message_count, stored

import natsbus


@dataclasses.dataclass
class Alert:
    severity: str
    value: float
    tags: list[str]


class Reading(pydantic.BaseModel):
    sensor: str
    value: float
    at: datetime.datetime


class Color(enum.Enum):
    RED = "red"


async def test_dict_becomes_compact_json_with_content_type(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream()
    ack = await bus.publish(f"{p}.cpu", {"severity": "high", "n": [1, 2.5, None, True]})
    assert isinstance(ack, natsbus.PubAck)
    assert (ack.stream, ack.seq, ack.duplicate) == (stream, 1, False)
    subject, data, headers = await stored(bus, stream, 1)
    assert subject == f"{p}.cpu"
    assert data == b'{"severity":"high","n":[1,2.5,null,true]}'
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([1, "a"], b'[1,"a"]'),
        (42, b"42"),
        (-1.5, b"-1.5"),
        (True, b"true"),
        (None, b"null"),
        ({"big": 2**70}, b'{"big":1180591620717411303424}'),
        ({"uni": "h\u00e9\u2603"}, '{"uni":"h\u00e9\u2603"}'.encode()),
        ({1: "int key"}, b'{"1":"int key"}'),
        ((1, 2), b"[1,2]"),
        ({"c": Color.RED}, b'{"c":"red"}'),
        ({"u": uuid.UUID(int=1)}, b'{"u":"00000000-0000-0000-0000-000000000001"}'),
        ({"d": datetime.date(2026, 1, 2)}, b'{"d":"2026-01-02"}'),
    ],
)
async def test_json_values(
    bus: natsbus.Bus, make_stream: StreamFactory, value: object, expected: bytes
) -> None:
    stream, p = await make_stream()
    await bus.publish(f"{p}.v", value)
    _, data, headers = await stored(bus, stream, 1)
    assert data == expected
    assert headers["Content-Type"] == "application/json"


async def test_dataclass_and_pydantic(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream()
    await bus.publish(f"{p}.a", Alert("high", 97.5, ["db"]))
    at = datetime.datetime(2026, 11, 24, 8, 0, tzinfo=datetime.timezone.utc)
    await bus.publish(f"{p}.r", Reading(sensor="t1", value=1.25, at=at))
    await bus.publish(f"{p}.n", {"items": [Alert("low", 1.0, [])]})
    _, a, ha = await stored(bus, stream, 1)
    _, r, hr = await stored(bus, stream, 2)
    _, n, _ = await stored(bus, stream, 3)
    assert json.loads(a) == {"severity": "high", "value": 97.5, "tags": ["db"]}
    assert json.loads(r) == {"sensor": "t1", "value": 1.25, "at": "2026-11-24T08:00:00Z"}
    assert json.loads(n) == {"items": [{"severity": "low", "value": 1.0, "tags": []}]}
    assert ha["Content-Type"] == hr["Content-Type"] == "application/json"


async def test_bytes_pass_through_and_str_is_utf8(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream()
    raw = b"\x00\x01\xff not json"
    await bus.publish(f"{p}.b", raw)
    await bus.publish(f"{p}.ba", bytearray(b"\x02\x03"))
    await bus.publish(f"{p}.mv", memoryview(b"\x04"))
    await bus.publish(f"{p}.s", "h\u00e9llo")
    expected = [raw, b"\x02\x03", b"\x04", "h\u00e9llo".encode()]
    for seq, want in enumerate(expected, start=1):
        _, data, headers = await stored(bus, stream, seq)
        assert data == want
        assert "Content-Type" not in headers


async def test_headers_are_sent(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream()
    await bus.publish(f"{p}.h", b"x", headers={"Trace-Id": "abc", "X-Multi": ["1", "2"]})
    _, _, headers = await stored(bus, stream, 1)
    assert headers["Trace-Id"] == "abc"
    assert headers["X-Multi"] in {"1", "2"}


async def test_msg_id_dedupes(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream()
    first = await bus.publish(f"{p}.e", {"id": 1}, msg_id="evt-1")
    second = await bus.publish(f"{p}.e", {"id": 1}, msg_id="evt-1")
    assert first.duplicate is False
    assert second.duplicate is True
    assert second.seq == first.seq
    assert await message_count(bus, stream) == 1


async def test_expectations(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, p = await make_stream()
    a1 = await bus.publish(f"{p}.x", b"1", msg_id="m1", expected_stream=stream)
    a2 = await bus.publish(f"{p}.x", b"2", expected_last_seq=a1.seq)
    await bus.publish(f"{p}.x", b"3", expected_last_subject_seq=a2.seq)
    await bus.publish(f"{p}.y", b"4", msg_id="m4")
    await bus.publish(f"{p}.y", b"5", expected_last_msg_id="m4")

    cases = [
        ({"expected_last_seq": 1}, 10071),
        ({"expected_last_subject_seq": 1}, 10071),
        ({"expected_last_msg_id": "nope"}, 10070),
        ({"expected_stream": "OTHER"}, 10060),
    ]
    for kwargs, code in cases:
        with pytest.raises(natsbus.ExpectationError) as err:
            await bus.publish(f"{p}.x", b"never", **kwargs)  # type: ignore[arg-type]
        assert err.value.err_code == code, kwargs
        assert isinstance(err.value, natsbus.JetStreamError)
        assert err.value.description
    assert await message_count(bus, stream) == 5


async def test_no_stream_fails_at_once(bus: natsbus.Bus) -> None:
    start = time.monotonic()
    with pytest.raises(natsbus.NoStreamError) as err:
        await bus.publish("nobody.captures.this", {"a": 1}, timeout=10)
    assert time.monotonic() - start < 1.0
    assert "nobody.captures.this" in str(err.value)
    assert isinstance(err.value, natsbus.NoRespondersError)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (float("nan"), "NaN"),
        ({"a": [1, object()]}, "payload['a'][1]"),
        ({(1, 2): "tuple key"}, "dict keys"),
    ],
)
async def test_unencodable_payloads_raise_encode_error(
    bus: natsbus.Bus, make_stream: StreamFactory, value: object, fragment: str
) -> None:
    stream, p = await make_stream()
    with pytest.raises(natsbus.EncodeError) as err:
        await bus.publish(f"{p}.bad", value)
    assert fragment in str(err.value)
    assert isinstance(err.value, TypeError)
    assert await message_count(bus, stream) == 0


@pytest.mark.parametrize(
    ("subject", "says"),
    [
        ("", "empty"), ("a b", "whitespace"), ("a\r\nPUB x 1", "whitespace"),
        ("a..b", "empty token"), (".x", "empty token"), ("x.*", "wildcard"),
        ("x.>", "wildcard"), ("x.>.y", "last token"),
    ],
)  # fmt: skip
async def test_invalid_subjects(bus: natsbus.Bus, subject: str, says: str) -> None:
    """One subject rule for streams and publishes (core/src/subjects.rs), on both paths."""
    with pytest.raises(natsbus.InvalidArgumentError, match=says):
        await bus.publish(subject, b"x")
    with pytest.raises(natsbus.BatchPublishError) as err:
        await bus.publish_many([(subject, b"x")])
    assert says in str(err.value.errors[0])


async def test_bad_header_and_timeout_arguments(bus: natsbus.Bus) -> None:
    with pytest.raises(natsbus.InvalidArgumentError, match="header"):
        await bus.publish("a.b", b"x", headers={"Bad Name": "v"})
    with pytest.raises(natsbus.InvalidArgumentError, match="timeout"):
        await bus.publish("a.b", b"x", timeout=-1)


async def test_publish_timeout_when_nothing_acks(bus: natsbus.Bus) -> None:
    # A core subscriber that never answers: the publish must time out, not hang.
    svc = await bus.serve("silent.sink", lambda m: _sleep_forever())
    try:
        start = time.monotonic()
        with pytest.raises(natsbus.TimeoutError):
            await bus.publish("silent.sink", b"x", timeout=0.3)
        assert time.monotonic() - start < 2.0
    finally:
        await _stop_quietly(svc)


async def _sleep_forever() -> None:
    import asyncio

    await asyncio.sleep(3600)


async def _stop_quietly(svc: natsbus.Service) -> None:
    import asyncio

    for task in list(svc._tasks):
        task.cancel()
    await asyncio.gather(*svc._tasks, return_exceptions=True)
    await svc.stop()


async def test_closed_bus_refuses(nats_url: str) -> None:
    b = await natsbus.connect(nats_url)
    await b.close()
    assert b.closed
    with pytest.raises(natsbus.ClosedError):
        await b.publish("a.b", b"x")
