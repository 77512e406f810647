"""OpenTelemetry (``natsbus[otel]``): publishes carry the W3C trace context of a PRODUCER
span, workers and services run handlers in CONSUMER / SERVER spans that are its children,
``natsbus.otel.span(msg)`` does it for plain iteration, and nothing changes without a span
or without OpenTelemetry.

Spans are recorded by the SDK's in-memory exporter; messages go through a real server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import StreamFactory, stored, unique

import natsbus
import natsbus.otel

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The finished spans of this test (the SDK provider is set once per process)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, sdk_trace.TracerProvider):
        provider = sdk_trace.TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_natsbus_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        provider._natsbus_test_exporter = True  # type: ignore[attr-defined]
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def tracer() -> Any:
    return trace.get_tracer("tests")


def traceparent(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def named(exporter: InMemorySpanExporter, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- publishing ----------------------------------------------------------------------------------


async def test_publish_stores_the_traceparent_of_its_producer_span(
    bus: natsbus.Bus, make_stream: StreamFactory, spans: InMemorySpanExporter
) -> None:
    stream, p = await make_stream()
    with tracer().start_as_current_span("checkout") as parent:
        ack = await bus.publish(f"{p}.created", {"id": 1}, msg_id="order-1", headers={"A": "b"})

    [producer] = named(spans, f"publish {p}.created")
    assert producer.kind == SpanKind.PRODUCER
    assert producer.parent.span_id == parent.get_span_context().span_id
    assert producer.context.trace_id == parent.get_span_context().trace_id
    assert dict(producer.attributes) == {
        "messaging.system": "nats",
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": f"{p}.created",
        "messaging.message.id": "order-1",
        "messaging.nats.stream.name": stream,
        "messaging.nats.stream.sequence": ack.seq,
    }
    _, _, headers = await stored(bus, stream, ack.seq)
    assert headers["traceparent"] == traceparent(producer)
    assert headers["A"] == "b" and headers["Nats-Msg-Id"] == "order-1"
    got = await bus.get_message(stream, ack.seq)
    assert got.headers["traceparent"] == traceparent(producer)


async def test_nothing_is_added_without_an_active_span(
    bus: natsbus.Bus, make_stream: StreamFactory, spans: InMemorySpanExporter
) -> None:
    stream, p = await make_stream()
    ack = await bus.publish(f"{p}.a", {"id": 1})
    acks = await bus.publish_many([(f"{p}.b", {"id": 2}), (f"{p}.c", b"x", {"K": "v"})])
    for seq, expected in ((ack.seq, {"Content-Type"}), (acks[0].seq, {"Content-Type"})):
        _, _, headers = await stored(bus, stream, seq)
        assert set(headers) == expected
    _, _, headers = await stored(bus, stream, acks[1].seq)
    assert headers == {"K": "v"}
    assert spans.get_finished_spans() == ()


async def test_a_failed_publish_records_the_error_on_its_span(
    bus: natsbus.Bus, spans: InMemorySpanExporter
) -> None:
    subject = unique("nostream.")
    with tracer().start_as_current_span("outer"), pytest.raises(natsbus.NoStreamError):
        await bus.publish(subject, {"id": 1})
    [producer] = named(spans, f"publish {subject}")
    assert producer.status.status_code == StatusCode.ERROR
    assert producer.attributes["error.type"] == "NoStreamError"
    assert [e.name for e in producer.events] == ["exception"]


async def test_publish_many_items_carry_one_producer_span(
    bus: natsbus.Bus, make_stream: StreamFactory, spans: InMemorySpanExporter
) -> None:
    stream, p = await make_stream()
    items: list[Any] = [
        (f"{p}.m", {"i": 0}),
        (f"{p}.m", {"i": 1}, None),
        (f"{p}.m", {"i": 2}, {"Nats-Msg-Id": "m-2"}),
    ]
    with tracer().start_as_current_span("batch") as parent:
        acks = await bus.publish_many(iter(items))
    [producer] = named(spans, f"publish {p}.m")
    assert producer.kind == SpanKind.PRODUCER
    assert producer.parent.span_id == parent.get_span_context().span_id
    assert producer.attributes["messaging.batch.message_count"] == 3
    assert producer.attributes["messaging.destination.name"] == f"{p}.m"
    for ack in acks:
        _, _, headers = await stored(bus, stream, ack.seq)
        assert headers["traceparent"] == traceparent(producer)
    _, _, last = await stored(bus, stream, acks[2].seq)
    assert last["Nats-Msg-Id"] == "m-2"

    with tracer().start_as_current_span("mixed"):
        await bus.publish_many([(f"{p}.x", 1), (f"{p}.y", 2)])
    [mixed] = named(spans, "publish")
    assert mixed.attributes["messaging.batch.message_count"] == 2


# -- workers -------------------------------------------------------------------------------------


async def test_a_worker_handler_runs_in_a_consumer_span_child_of_the_publisher(
    bus: natsbus.Bus, make_stream: StreamFactory, spans: InMemorySpanExporter
) -> None:
    stream, p = await make_stream("w")
    seen: list[Any] = []

    async def handle(msg: natsbus.Message[Any]) -> None:
        seen.append(trace.get_current_span())
        # What the handler publishes continues the trace, as a child of its span.
        await bus.publish(f"{p}.next", {"from": msg.seq})

    def handle_sync(msg: natsbus.Message[Any]) -> None:
        seen.append(trace.get_current_span())  # sync handlers run in a thread: same context

    with tracer().start_as_current_span("api") as parent:
        ack = await bus.publish(f"{p}.task", {"id": 1}, msg_id="t-1")
    async with bus.worker(stream, "w", {f"{p}.task": handle, f"{p}.next": handle_sync}) as w:
        await wait_until(lambda: w.handled == 2, what="both handled")

    [producer] = named(spans, f"publish {p}.task")
    first, second = named(spans, f"process {stream}")
    assert first.kind == SpanKind.CONSUMER
    assert first.parent.span_id == producer.context.span_id
    assert first.context.trace_id == parent.get_span_context().trace_id
    assert seen[0].get_span_context().span_id == first.context.span_id
    assert dict(first.attributes) == {
        "messaging.system": "nats",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": f"{p}.task",
        "messaging.message.id": "t-1",
        "messaging.consumer.group.name": "w",
        "messaging.nats.stream.name": stream,
        "messaging.nats.stream.sequence": ack.seq,
        "messaging.nats.message.delivery_count": 1,
    }
    assert first.status.status_code == StatusCode.UNSET
    # handler -> publish -> the next worker span: one trace.
    [onward] = named(spans, f"publish {p}.next")
    assert onward.parent.span_id == first.context.span_id
    assert second.parent.span_id == onward.context.span_id
    assert second.context.trace_id == parent.get_span_context().trace_id
    assert seen[1].get_span_context().span_id == second.context.span_id


async def test_a_failing_handler_records_the_error_and_redelivery_counts(
    bus: natsbus.Bus, make_stream: StreamFactory, spans: InMemorySpanExporter
) -> None:
    stream, p = await make_stream(
        "w", consumer_config={"backoff": [100_000_000], "ack_wait": 100_000_000, "max_deliver": 3}
    )

    async def handle(msg: natsbus.Message[Any]) -> None:
        if msg.delivered == 1:
            raise ValueError("boom")
        if msg.delivered == 2:
            raise natsbus.Reject("bad input")

    with tracer().start_as_current_span("api"):
        await bus.publish(f"{p}.task", {"id": 1})
    async with bus.worker(stream, "w", handle) as w:
        await wait_until(lambda: w.rejected == 1, what="the reject")

    failed, rejected = named(spans, f"process {stream}")
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "ValueError: boom"
    assert failed.attributes["error.type"] == "ValueError"
    [event] = failed.events
    assert event.name == "exception" and event.attributes["exception.message"] == "boom"
    assert failed.attributes["messaging.nats.message.delivery_count"] == 1
    assert rejected.attributes["messaging.nats.message.delivery_count"] == 2
    assert rejected.status.status_code == StatusCode.ERROR
    assert rejected.status.description == "rejected: bad input"
    assert rejected.parent.span_id == failed.parent.span_id, "both continue the publisher's"


async def test_a_worker_without_trace_context_starts_root_spans(
    bus: natsbus.Bus, make_stream: StreamFactory, spans: InMemorySpanExporter
) -> None:
    stream, p = await make_stream("w")
    await bus.publish(f"{p}.task", {"id": 1})
    async with bus.worker(stream, "w", lambda m: None) as w:
        await wait_until(lambda: w.handled == 1)
    [root] = named(spans, f"process {stream}")
    assert root.parent is None


# -- request and serve ---------------------------------------------------------------------------


async def test_request_and_serve_spans(bus: natsbus.Bus, spans: InMemorySpanExporter) -> None:
    subject = unique("svc.")
    seen: list[Any] = []

    def answer(msg: natsbus.Message[Any]) -> dict[str, Any]:
        seen.append(trace.get_current_span())
        if msg.data.get("fail"):
            raise RuntimeError("no answer")
        return {"ok": True}

    async with await bus.serve(subject, answer):
        with tracer().start_as_current_span("ask") as parent:
            reply = await bus.request(subject, {"q": 1})
            with pytest.raises(natsbus.ServiceError):
                await bus.request(subject, {"fail": True})
    assert reply.data == {"ok": True}
    assert "traceparent" not in reply.headers

    ok_client, failed_client = named(spans, f"request {subject}")
    ok_server, failed_server = named(spans, f"process {subject}")
    assert ok_client.kind == SpanKind.CLIENT
    assert ok_client.parent.span_id == parent.get_span_context().span_id
    assert ok_client.attributes["messaging.operation.name"] == "request"
    assert ok_server.kind == SpanKind.SERVER
    assert ok_server.parent.span_id == ok_client.context.span_id
    assert ok_server.attributes["messaging.destination.name"] == subject
    assert seen[0].get_span_context().span_id == ok_server.context.span_id
    assert ok_server.status.status_code == StatusCode.UNSET
    assert failed_server.status.status_code == StatusCode.ERROR
    assert failed_server.attributes["error.type"] == "RuntimeError"
    assert failed_client.status.status_code == StatusCode.ERROR
    assert failed_client.attributes["error.type"] == "ServiceError"


# -- plain iteration: natsbus.otel.span(msg) -----------------------------------------------------


async def test_span_helper_for_consume_and_replay(
    bus: natsbus.Bus, make_stream: StreamFactory, spans: InMemorySpanExporter
) -> None:
    stream, p = await make_stream("c")
    with tracer().start_as_current_span("producer"):
        await bus.publish(f"{p}.e", {"i": 1})
    [producer] = named(spans, f"publish {p}.e")

    async with bus.consume(stream, "c") as consumer:
        msg = await consumer.next(timeout=5)
        assert msg is not None
        finished = {s.name for s in spans.get_finished_spans()}
        assert finished == {"producer", f"publish {p}.e"}, "iterating starts no span itself"
        with natsbus.otel.span(msg) as span:
            assert trace.get_current_span() is span
        await msg.ack()
    [consumed] = named(spans, f"process {stream}")
    assert consumed.kind == SpanKind.CONSUMER
    assert consumed.parent.span_id == producer.context.span_id
    assert consumed.attributes["messaging.consumer.group.name"] == "c"

    async with bus.replay(stream) as replay:
        async for msg in replay:
            with pytest.raises(KeyError), natsbus.otel.span(msg, name="audit"):
                raise KeyError("x")
    [audited] = named(spans, "audit")
    assert audited.parent.span_id == producer.context.span_id
    assert audited.status.status_code == StatusCode.ERROR
    assert audited.attributes["messaging.nats.stream.sequence"] == 1

    ctx = natsbus.otel.extract(msg)
    assert ctx is not None
    assert trace.get_current_span(ctx).get_span_context().span_id == producer.context.span_id


# -- in other processes: no SDK, and no OpenTelemetry at all -------------------------------------

_PROPAGATE_ONLY = """
import asyncio, sys
import natsbus
import opentelemetry.trace  # the application uses the API (instrumented code), but no SDK

async def main(url, stream, p):
    async with natsbus.connect(url) as bus:
        async def handle(msg):
            await bus.publish(p + ".next", {"from": msg.seq})
        await bus.publish(p + ".task", {}, headers={"traceparent": sys.argv[4]})
        async with bus.worker(stream, "w", {p + ".task": handle, p + ".next": lambda m: None}) as w:
            while w.handled < 2:
                await asyncio.sleep(0.02)
        nxt = await bus.get_message(stream, 2)
        print(nxt.headers.get("traceparent"))

asyncio.run(main(*sys.argv[1:4]))
"""


async def test_without_an_sdk_the_context_still_travels_through_workers(
    nats_url: str, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream("w")
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    out = subprocess.run(
        [sys.executable, "-c", _PROPAGATE_ONLY, nats_url, stream, p, incoming],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # The API alone (no SDK): no new spans, the publisher's context is passed on.
    assert out.stdout.strip() == incoming


_WITHOUT_OTEL = """
import sys
sys.modules["opentelemetry"] = None  # as if it were not installed: importing it fails
import asyncio
import natsbus, natsbus.otel
from natsbus import _otel

async def main(url, stream, p):
    assert _otel.ENABLED is False
    async with natsbus.connect(url) as bus:
        await bus.publish(p + ".task", {"id": 1})
        await bus.publish_many([(p + ".task", {"id": 2})])
        async with await bus.serve(p + "svc", lambda m: {"ok": 1}):
            assert (await bus.request(p + "svc", {})).data == {"ok": 1}
        async with bus.worker(stream, "w", lambda m: None) as w:
            while w.handled < 2:
                await asyncio.sleep(0.02)
        msg = await bus.get_message(stream, 1)
        with natsbus.otel.span(msg) as span:
            assert span is None
        assert natsbus.otel.extract(msg) is None
        assert sorted(msg.headers) == ["Content-Type"]
    assert sys.modules["opentelemetry"] is None
    assert not any(name.startswith("opentelemetry.") for name in sys.modules)
    print("ok")

asyncio.run(main(*sys.argv[1:4]))
"""


async def test_natsbus_works_without_opentelemetry(
    nats_url: str, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream("w")
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_WITHOUT_OTEL), nats_url, stream, p],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


_UNUSED = """
import asyncio, sys
import natsbus

async def main(url, stream, p):
    async with natsbus.connect(url) as bus:
        await bus.publish(p + ".task", {}, headers={"traceparent": sys.argv[4]})
        async with bus.worker(stream, "w", lambda m: None) as w:
            while w.handled < 1:
                await asyncio.sleep(0.02)
        async with await bus.serve(p + "svc", lambda m: None):
            await bus.request(p + "svc")
    print(sorted(m for m in sys.modules if m.startswith("opentelemetry.")))

asyncio.run(main(*sys.argv[1:4]))
"""


async def test_opentelemetry_is_not_imported_unless_the_application_uses_it(
    nats_url: str, make_stream: StreamFactory
) -> None:
    stream, p = await make_stream("w")
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    out = subprocess.run(
        [sys.executable, "-c", _UNUSED, nats_url, stream, p, incoming],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_the_readme_tracing_example_runs(fresh_server: Any, tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("\n## Tracing (OpenTelemetry)\n", 1)[1]
    script = tmp_path / "tracing_example.py"
    script.write_text(section.split("```python\n", 1)[1].split("```", 1)[0])
    out = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "NATS_URL": fresh_server.url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[3] == "audited {'id': 7}"
    spans = [line.split() for line in lines[:3] + lines[4:]]
    ids = {" ".join(s[:-2]): (s[-2][len("span=") :], s[-1][len("parent=") :]) for s in spans}
    assert list(ids) == [
        "PRODUCER publish checkout.created",
        "INTERNAL POST /orders",
        "CONSUMER process CHECKOUT",
    ]
    publish, outer = ids["PRODUCER publish checkout.created"], ids["INTERNAL POST /orders"]
    assert publish[1] == outer[0] and outer[1] == "-"
    worker, audit = spans[2], spans[3]
    assert worker[-1] == audit[-1] == f"parent={publish[0]}"
