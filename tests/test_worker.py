"""Workers (``bus.worker``): ack on return, nak with backoff on exception, term (and
dead-letter) on Reject / undecodable / unrouted, in_progress for long handlers, concurrency,
graceful stop, ``natsbus.run`` and signals, and dead letters when workers crash.

Everything is checked the way a user would: what the stream, the consumer and the
dead-letter stream hold afterwards, delivery counts, timings, exit codes and error text."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import StreamFactory, message_count, stored

import natsbus
from natsbus.testing import NatsServer

WORKER_PROC = Path(__file__).parent / "support" / "worker_proc.py"
SECOND = 1_000_000_000  # ns


@dataclasses.dataclass
class Task:
    id: int
    name: str


async def wait_until(
    check: Callable[[], Any], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``check()`` (sync or async) until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def settled(bus: natsbus.Bus, stream: str, durable: str) -> dict[str, Any]:
    """The consumer's info once nothing is pending or unacked (acks are fire-and-forget)."""
    info: dict[str, Any] = {}

    async def done() -> bool:
        info.update(await bus.consumer_info(stream, durable))
        return info["num_pending"] == 0 and info["num_ack_pending"] == 0

    await wait_until(done, what=f"{stream}/{durable} to settle")
    return info


async def dead_letter_stream(make_stream: StreamFactory) -> tuple[str, str]:
    """A stream capturing ``<prefix>.>`` and the dead-letter subject in it."""
    stream, prefix = await make_stream()
    return stream, f"{prefix}.dead"


def dl_config(subject: str, **config: Any) -> dict[str, Any]:
    return {"metadata": {"natsbus.dead_letter": subject}, **config}


# -- acking, threads, async -----------------------------------------------------------------


async def test_returning_acks_every_message_once_in_order(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, prefix = await make_stream("w")
    await bus.publish_many([(f"{prefix}.task", {"id": i, "name": f"t{i}"}) for i in range(50)])
    seen: list[tuple[int, int, Task]] = []

    async def handle(msg: natsbus.Message) -> None:
        seen.append((msg.seq, msg.delivered, msg.data))

    async with bus.worker(stream, "w", handle, model=Task) as worker:
        await wait_until(lambda: len(seen) >= 50, what="50 messages handled")
    info = await settled(bus, stream, "w")
    assert [s for s, _, _ in seen] == list(range(1, 51))  # concurrency 1: in order
    assert all(d == 1 for _, d, _ in seen)
    assert seen[7][2] == Task(7, "t7")
    assert info["ack_floor"]["stream_seq"] == 50 and info["num_redelivered"] == 0
    assert (worker.handled, worker.failed, worker.rejected) == (50, 0, 0)
    assert worker.state == "stopped"
    assert repr(worker) == (
        f"<natsbus.Worker {stream}/w stopped concurrency=1 handled=50 failed=0 rejected=0 "
        "dead_lettered=0>"
    )


async def test_a_sync_handler_runs_in_a_thread_and_does_not_block_the_loop(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, prefix = await make_stream("w")
    await bus.publish_many([(f"{prefix}.job", {"n": i}) for i in range(6)])
    threads: set[str] = set()
    handled: list[int] = []

    def handle(msg: natsbus.Message) -> None:  # blocking, as sync code is
        threads.add(threading.current_thread().name)
        time.sleep(0.2)
        handled.append(msg.data["n"])

    # While the handlers block, the loop keeps ticking.
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    try:
        t0 = time.monotonic()
        async with bus.worker(stream, "w", handle, concurrency=2):
            await wait_until(lambda: len(handled) >= 6, what="6 sync handlers")
        elapsed = time.monotonic() - t0
    finally:
        tick.cancel()
    assert sorted(handled) == list(range(6))
    assert threading.main_thread().name not in threads
    assert len(threads) == 2  # concurrency 2: two threads at once
    assert elapsed < 6 * 0.2  # they overlapped
    assert max(gaps) < 0.15, f"the loop stalled for {max(gaps):.3f}s"
    await settled(bus, stream, "w")


async def test_handlers_may_settle_messages_themselves(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, prefix = await make_stream("w", consumer_config={"ack_wait": 30 * SECOND})
    await bus.publish(f"{prefix}.a", {"n": 1})
    calls: list[int] = []

    async def handle(msg: natsbus.Message) -> None:
        calls.append(msg.delivered)
        if msg.delivered == 1:
            await msg.nak(delay=0.2)  # the worker leaves it nak'ed, no error
        else:
            await msg.ack()

    async with bus.worker(stream, "w", handle) as worker:
        await wait_until(lambda: len(calls) >= 2, what="the redelivery the handler asked for")
    assert calls == [1, 2]
    assert (worker.handled, worker.failed) == (2, 0)
    await settled(bus, stream, "w")


# -- failures: nak with backoff --------------------------------------------------------------


async def test_an_exception_naks_with_the_declared_backoff(
    bus: natsbus.Bus, make_stream: StreamFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stream, prefix = await make_stream(
        "w", consumer_config={"backoff": [300_000_000, 600_000_000], "max_deliver": 5}
    )
    await bus.publish(f"{prefix}.flaky", {"n": 1})
    deliveries: list[tuple[float, int]] = []

    async def handle(msg: natsbus.Message) -> None:
        deliveries.append((time.monotonic(), msg.delivered))
        if msg.delivered < 3:
            raise RuntimeError(f"transient failure {msg.delivered}")

    with caplog.at_level("ERROR", logger="natsbus.worker"):
        async with bus.worker(stream, "w", handle) as worker:
            await wait_until(lambda: len(deliveries) >= 3, what="3 deliveries")
    assert [d for _, d in deliveries] == [1, 2, 3]
    first, second = (deliveries[1][0] - deliveries[0][0], deliveries[2][0] - deliveries[1][0])
    assert 0.25 < first < 0.9, first  # backoff[0] = 0.3 s
    assert 0.55 < second < 1.3, second  # backoff[1] = 0.6 s
    assert (worker.handled, worker.failed) == (1, 2)
    info = await settled(bus, stream, "w")
    assert info["ack_floor"]["stream_seq"] == 1
    failures = [r for r in caplog.records if r.name == "natsbus.worker"]
    assert len(failures) == 2
    assert "transient failure 1" in str(failures[0].exc_info[1])  # type: ignore[index]
    assert f"{stream}/w seq 1" in failures[0].getMessage()
    assert "delivery 1" in failures[0].getMessage()
    assert failures[0].seq == 1 and failures[0].delivered == 1  # type: ignore[attr-defined]


async def test_an_exception_without_backoff_naks_with_the_default_delay(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    assert [natsbus._worker.default_backoff(d) for d in (1, 2, 3, 7, 50)] == [1, 2, 4, 60, 60]
    stream, prefix = await make_stream("w")
    await bus.publish(f"{prefix}.flaky", {"n": 1})
    deliveries: list[float] = []

    async def handle(msg: natsbus.Message) -> None:
        deliveries.append(time.monotonic())
        if msg.delivered == 1:
            raise RuntimeError("transient")

    async with bus.worker(stream, "w", handle):
        await wait_until(lambda: len(deliveries) >= 2, what="the redelivery")
    spacing = deliveries[1] - deliveries[0]
    assert 0.9 < spacing < 2.5, spacing  # 1 s after the first delivery: not a hot loop
    await settled(bus, stream, "w")


# -- reject, decode errors, dead letters -----------------------------------------------------


async def test_reject_and_undecodable_payloads_are_termed_and_dead_lettered(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    dl_stream, dl_subject = await dead_letter_stream(make_stream)
    stream, prefix = await make_stream("w", consumer_config=dl_config(dl_subject))
    await bus.publish(f"{prefix}.ok", {"id": 1, "name": "fine"})
    await bus.publish(f"{prefix}.raw", b"\x00\xffnot json")  # seq 2: bytes, untouched
    await bus.publish(f"{prefix}.shape", {"id": "x"})  # seq 3: JSON, but not a Task
    await bus.publish(
        f"{prefix}.bad",
        {"id": 4, "name": "reject me"},
        headers={"Trace-Id": "trace-4", "Tenant": ["a", "b"]},
        msg_id="original-4",
    )
    calls: list[int] = []

    async def handle(msg: natsbus.Message[Task]) -> None:
        calls.append(msg.seq)
        if msg.data.name == "reject me":
            raise natsbus.Reject("bad input:\nname is\treserved")

    async with bus.worker(stream, "w", handle, model=Task) as worker:
        await wait_until(lambda: worker.rejected >= 3, what="3 rejected messages")
        await wait_until(lambda: message_count(bus, dl_stream), what="dead letters", timeout=3)
        await asyncio.sleep(0.3)
    # Undecodable payloads never reach the handler (model= decodes first).
    assert calls == [1, 4]
    assert (worker.handled, worker.rejected, worker.dead_lettered) == (1, 3, 3)
    info = await settled(bus, stream, "w")
    assert info["num_redelivered"] == 0 and info["ack_floor"]["stream_seq"] == 4
    assert await message_count(bus, dl_stream) == 3
    letters = [await stored(bus, dl_stream, seq) for seq in (1, 2, 3)]
    by_seq = {int(h["Natsbus-Dead-Letter-Sequence"]): (s, p, h) for s, p, h in letters}
    assert sorted(by_seq) == [2, 3, 4]
    for seq, (subject, _, headers) in by_seq.items():
        assert subject == dl_subject
        assert headers["Nats-Msg-Id"] == f"natsbus-dl:{stream}:{seq}"
        assert headers["Natsbus-Dead-Letter-Stream"] == stream
        assert headers["Natsbus-Dead-Letter-Consumer"] == "w"
        assert headers["Natsbus-Dead-Letter-Delivered"] == "1"
    _, raw, raw_headers = by_seq[2]
    assert raw == b"\x00\xffnot json"
    assert raw_headers["Natsbus-Dead-Letter-Subject"] == f"{prefix}.raw"
    assert "not JSON" in raw_headers["Natsbus-Dead-Letter-Reason"]
    _, shape, shape_headers = by_seq[3]
    assert json.loads(shape) == {"id": "x"}
    assert "does not decode into Task" in shape_headers["Natsbus-Dead-Letter-Reason"]
    _, bad, bad_headers = by_seq[4]
    assert json.loads(bad) == {"id": 4, "name": "reject me"}
    assert bad_headers["Natsbus-Dead-Letter-Reason"] == "bad input: name is reserved"
    assert bad_headers["Natsbus-Dead-Letter-Subject"] == f"{prefix}.bad"
    assert bad_headers["Trace-Id"] == "trace-4"  # original headers kept
    assert bad_headers["Content-Type"] == "application/json"
    # Every value of a repeated header is kept (stored() shows the last one; read them all).
    got = await bus.jetstream_api(f"STREAM.MSG.GET.{dl_stream}", {"seq": 3})
    block = base64.b64decode(got["message"]["hdrs"]).decode()
    assert "Tenant: a\r\nTenant: b" in block or block.count("Tenant:") == 2
    assert "original-4" not in block  # the original msg id is replaced


async def test_without_a_dead_letter_subject_a_reject_terms_with_its_reason(
    bus: natsbus.Bus, make_stream: StreamFactory, nats_url: str
) -> None:
    nats = pytest.importorskip("nats")
    stream, prefix = await make_stream("w", consumer_config={"ack_wait": SECOND})
    nc = await nats.connect(nats_url)
    terminated: list[dict[str, Any]] = []

    async def on_advisory(m: Any) -> None:
        terminated.append(json.loads(m.data))

    await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.w", cb=on_advisory)
    await nc.flush()
    try:
        await bus.publish(f"{prefix}.a", {"n": 1})
        await bus.publish(f"{prefix}.b", b"{broken")
        calls: list[int] = []

        async def handle(msg: natsbus.Message) -> None:
            calls.append(msg.seq)
            if msg.data["n"] == 1:  # seq 2 raises DecodeError here: termed too
                raise natsbus.Reject("bad input")

        async with bus.worker(stream, "w", handle) as worker:
            await wait_until(lambda: len(terminated) >= 2, what="2 terminated advisories")
            await asyncio.sleep(1.3)  # past ack_wait: nothing comes back
        assert calls == [1, 2]
        assert worker.rejected == 2 and worker.dead_lettered == 0
        reasons = {t["stream_seq"]: t["reason"] for t in terminated}
        assert reasons[1] == "bad input"
        assert "is not JSON" in reasons[2]
        info = await settled(bus, stream, "w")
        assert info["num_redelivered"] == 0
    finally:
        await nc.close()


async def test_failing_on_the_last_allowed_delivery_is_dead_lettered_once(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    dl_stream, dl_subject = await dead_letter_stream(make_stream)
    stream, prefix = await make_stream(
        "w", consumer_config=dl_config(dl_subject, max_deliver=3, backoff=[SECOND // 10] * 2)
    )
    await bus.publish(f"{prefix}.poison", {"n": 1}, headers={"Trace-Id": "p"})
    calls: list[int] = []

    async def handle(msg: natsbus.Message) -> None:
        calls.append(msg.delivered)
        raise ValueError("always broken")

    async with bus.worker(stream, "w", handle) as worker:
        await wait_until(lambda: message_count(bus, dl_stream), what="the dead letter")
        await asyncio.sleep(0.5)
    assert calls == [1, 2, 3]
    assert (worker.failed, worker.dead_lettered) == (3, 1)
    assert await message_count(bus, dl_stream) == 1
    _, payload, headers = await stored(bus, dl_stream, 1)
    assert json.loads(payload) == {"n": 1} and headers["Trace-Id"] == "p"
    assert headers["Natsbus-Dead-Letter-Delivered"] == "3"
    assert headers["Natsbus-Dead-Letter-Reason"] == (
        "handler failed on the last allowed delivery (3 of 3): ValueError: always broken"
    )
    info = await settled(bus, stream, "w")
    assert info["ack_floor"]["stream_seq"] == 1


async def test_a_failed_dead_letter_publish_naks_instead_of_losing_the_message(
    bus: natsbus.Bus, make_stream: StreamFactory, caplog: pytest.LogCaptureFixture
) -> None:
    uncaptured = f"nowhere{os.getpid()}.dead"
    stream, prefix = await make_stream(
        "w", consumer_config=dl_config(uncaptured, backoff=[SECOND // 5])
    )
    await bus.publish(f"{prefix}.a", {"n": 1})
    calls: list[int] = []

    async def handle(msg: natsbus.Message) -> None:
        calls.append(msg.delivered)
        if msg.delivered == 1:
            raise natsbus.Reject("bad")

    with caplog.at_level("WARNING", logger="natsbus.worker"):
        async with bus.worker(stream, "w", handle):
            await wait_until(lambda: len(calls) >= 2, what="the redelivery")
    assert calls == [1, 2]  # not termed: redelivered after the backoff, then handled
    text = caplog.text
    assert f"no stream captures its dead-letter subject {uncaptured!r}" in text
    assert "could not dead-letter" in text and "nak'ed instead" in text
    await settled(bus, stream, "w")


async def test_a_topology_dead_letter_field_reaches_the_worker(bus: natsbus.Bus) -> None:
    """``dead_letter:`` in the topology, applied by ensure_streams, is what workers use."""
    name = f"TOPO{os.getpid()}"
    prefix, dl_prefix = name.lower(), f"{name.lower()}dl"
    plan = await bus.ensure_streams(
        {
            "streams": {
                name: {
                    "subjects": [f"{prefix}.>"],
                    "storage": "memory",
                    "consumers": {"w": {"max_deliver": 3, "dead_letter": f"{dl_prefix}.dead"}},
                },
                f"{name}_DL": {"subjects": [f"{dl_prefix}.>"], "storage": "memory"},
            }
        }
    )
    assert plan.by_action("create")
    await bus.publish(f"{prefix}.bad", {"n": 1})

    async def handle(msg: natsbus.Message) -> None:
        raise natsbus.Reject("not today")

    async with bus.worker(name, "w", handle) as worker:
        assert worker.dead_letter == f"{dl_prefix}.dead"
        await wait_until(lambda: message_count(bus, f"{name}_DL"), what="the dead letter")
    _, _, headers = await stored(bus, f"{name}_DL", 1)
    assert headers["Natsbus-Dead-Letter-Reason"] == "not today"
    assert headers["Natsbus-Dead-Letter-Stream"] == name


# -- long handlers: in_progress --------------------------------------------------------------


async def test_a_handler_running_three_times_ack_wait_is_not_redelivered(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, prefix = await make_stream("w", consumer_config={"ack_wait": SECOND})
    await bus.publish(f"{prefix}.long", {"n": 1})
    calls: list[int] = []

    async def handle(msg: natsbus.Message) -> None:
        calls.append(msg.delivered)
        await asyncio.sleep(3.0)

    # Concurrency 2: a redelivery would be handed to the idle lane at once.
    async with bus.worker(stream, "w", handle, concurrency=2) as worker:
        await wait_until(lambda: worker.handled >= 1, timeout=6, what="the long handler")
    assert calls == [1]
    info = await settled(bus, stream, "w")
    assert info["num_redelivered"] == 0 and info["ack_floor"]["stream_seq"] == 1


# -- concurrency and prefetch ----------------------------------------------------------------


async def test_concurrency_runs_that_many_handlers_at_once(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, prefix = await make_stream("w")
    await bus.publish_many([(f"{prefix}.job", {"n": i}) for i in range(12)])
    running = 0
    most = 0
    done: list[int] = []

    async def handle(msg: natsbus.Message) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.2)
        running -= 1
        done.append(msg.seq)

    t0 = time.monotonic()
    async with bus.worker(stream, "w", handle, concurrency=4) as worker:
        await wait_until(lambda: len(done) >= 12, what="12 jobs")
        assert worker.in_flight == 0
    elapsed = time.monotonic() - t0
    assert most == 4
    assert sorted(done) == list(range(1, 13))
    assert elapsed < 1.5, elapsed  # three rounds of 0.2 s, not twelve
    await settled(bus, stream, "w")


async def test_a_slow_worker_holds_about_concurrency_messages(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    """Four lanes of 0.25-0.75 s jobs hold about four messages (each held one is a
    max_ack_pending slot the durable's other workers cannot use), not a prefetched pile."""
    stream, prefix = await make_stream("w", consumer_config={"ack_wait": 30 * SECOND})
    await bus.publish_many([(f"{prefix}.job", {"n": i}) for i in range(200)])
    handled: list[int] = []

    async def handle(msg: natsbus.Message) -> None:
        await asyncio.sleep(0.25 + (msg.seq * 7919 % 100) / 200)  # spread, reproducible
        handled.append(msg.seq)

    n = 4
    held: list[int] = []
    async with bus.worker(stream, "w", handle, concurrency=n):
        await wait_until(lambda: len(handled) >= n, what="a first round of jobs")
        t_end = time.monotonic() + 2.5
        while time.monotonic() < t_end:
            held.append((await bus.consumer_info(stream, "w"))["num_ack_pending"])
            await asyncio.sleep(0.05)
    assert len(handled) >= 4 * n  # the lanes kept busy
    assert max(held) <= n + 4, held
    assert sorted(held)[len(held) // 2] <= n + 2, held


async def test_a_fast_worker_streams(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    stream, prefix = await make_stream("w")
    n = 5000
    await bus.publish_many([(f"{prefix}.e", {"n": i}) for i in range(n)])
    seen = 0

    async def handle(msg: natsbus.Message) -> None:
        nonlocal seen
        seen += 1

    t0 = time.monotonic()
    async with bus.worker(stream, "w", handle) as worker:
        await wait_until(lambda: seen >= n, timeout=20, what=f"{n} messages")
    elapsed = time.monotonic() - t0
    assert worker.handled == n
    assert elapsed < 5, f"{n} no-op messages took {elapsed:.2f}s"
    await settled(bus, stream, "w")


# -- subject pattern dispatch -----------------------------------------------------------------


async def test_a_mapping_dispatches_on_subject_patterns_first_match_wins(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, prefix = await make_stream("w")
    subjects = [f"{prefix}.order.created", f"{prefix}.order.eu.created", f"{prefix}.user.x"]
    await bus.publish_many([(s, {"s": s}) for s in subjects * 2])
    got: dict[str, list[str]] = {"order": [], "fallback": []}

    async def on_order(msg: natsbus.Message) -> None:
        got["order"].append(msg.subject)

    def fallback(msg: natsbus.Message) -> None:  # sync and async handlers mix
        got["fallback"].append(msg.subject)

    handlers = {f"{prefix}.order.*": on_order, f"{prefix}.>": fallback}
    async with bus.worker(stream, "w", handlers, concurrency=2) as worker:
        await wait_until(lambda: worker.handled >= 6, what="6 messages")
    assert sorted(got["order"]) == [subjects[0]] * 2
    assert sorted(got["fallback"]) == sorted([subjects[1], subjects[2]] * 2)
    await settled(bus, stream, "w")

    # In mapping order: a catch-all first takes everything.
    await bus.publish(f"{prefix}.order.late", {})
    got = {"order": [], "fallback": []}
    reordered = {f"{prefix}.>": fallback, f"{prefix}.order.*": on_order}
    async with bus.worker(stream, "w", reordered) as worker:
        await wait_until(lambda: worker.handled >= 1, what="the late order")
    assert got == {"order": [], "fallback": [f"{prefix}.order.late"]}


async def test_a_subject_no_pattern_matches_is_termed_dead_lettered_and_logged(
    bus: natsbus.Bus, make_stream: StreamFactory, caplog: pytest.LogCaptureFixture
) -> None:
    dl_stream, dl_subject = await dead_letter_stream(make_stream)
    stream, prefix = await make_stream("w", consumer_config=dl_config(dl_subject))
    await bus.publish(f"{prefix}.user.signup", {"u": 1})
    await bus.publish(f"{prefix}.order.paid", {"o": 1})
    orders: list[int] = []

    async def on_order(msg: natsbus.Message) -> None:
        orders.append(msg.seq)

    with caplog.at_level("WARNING", logger="natsbus.worker"):
        async with bus.worker(stream, "w", {f"{prefix}.order.>": on_order}) as worker:
            await wait_until(lambda: worker.handled + worker.rejected >= 2, what="both")
            await wait_until(lambda: message_count(bus, dl_stream), what="the dead letter")
    assert orders == [2] and worker.rejected == 1
    _, _, headers = await stored(bus, dl_stream, 1)
    reason = headers["Natsbus-Dead-Letter-Reason"]
    assert reason.startswith(f"no handler for subject '{prefix}.user.signup'")
    assert headers["Natsbus-Dead-Letter-Subject"] == f"{prefix}.user.signup"
    assert f"{prefix}.user.signup" in caplog.text
    info = await settled(bus, stream, "w")
    assert info["num_redelivered"] == 0


@pytest.mark.parametrize(
    ("handler", "needle"),
    [
        ({"events.ord*": print}, "did you mean 'events.*'?"),
        ({"events.>.x": print}, "'>' matches the rest of the subject and must be the last token"),
        ({"events..x": print}, "empty token"),
        ({"": print}, "is empty"),
        ({"events x": print}, "whitespace"),
        ({5: print}, "handler patterns must be subject strings"),
        ({"events.*": "print"}, "the handler for pattern 'events.*' is not callable"),
        ({}, "the handler mapping is empty"),
        (42, "handler must be callable"),
    ],
)
async def test_bad_handlers_and_patterns_are_refused_saying_what_to_fix(
    bus: natsbus.Bus, handler: Any, needle: str
) -> None:
    with pytest.raises(natsbus.InvalidArgumentError) as err:
        bus.worker("S", "w", handler)
    assert needle in str(err.value)


async def test_bad_arguments_are_refused(bus: natsbus.Bus, make_stream: StreamFactory) -> None:
    async def handle(msg: natsbus.Message) -> None: ...

    for bad in (0, -1, 1.5, True):
        with pytest.raises(natsbus.InvalidArgumentError, match="concurrency must be"):
            bus.worker("S", "w", handle, concurrency=bad)
    with pytest.raises(natsbus.InvalidArgumentError, match="grace must be"):
        bus.worker("S", "w", handle).stop(-1)
    with pytest.raises(natsbus.InvalidArgumentError):
        await bus.worker("bad name", "w", handle).run()
    # What only the server knows fails run(), naming it.
    with pytest.raises(natsbus.StreamNotFoundError):
        await bus.worker(f"MISSING{os.getpid()}", "w", handle).run()
    stream, _ = await make_stream("none", consumer_config={"ack_policy": "none"})
    with pytest.raises(natsbus.InvalidArgumentError, match="ack_policy none"):
        await bus.worker(stream, "none", handle).run()
    with pytest.raises(natsbus.ConsumerNotFoundError):
        async with bus.worker(stream, "missing", handle):
            pass
    # A worker runs once; stopped before it ran, run() returns at once.
    worker = bus.worker(stream, "none", handle)
    await worker.stop()
    await asyncio.wait_for(worker.run(), 1)
    assert worker.state == "stopped"


# -- stopping ---------------------------------------------------------------------------------


async def test_stop_lets_the_handler_in_flight_finish_and_acks_it(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, prefix = await make_stream("w", consumer_config={"ack_wait": 30 * SECOND})
    await bus.publish(f"{prefix}.a", {"n": 1})
    started = asyncio.Event()
    finished: list[int] = []

    async def handle(msg: natsbus.Message) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.append(msg.seq)

    worker = bus.worker(stream, "w", handle)
    run = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    t0 = time.monotonic()
    stopping = worker.stop(grace=5)
    assert worker.state == "stopping"
    await stopping
    await asyncio.wait_for(run, 1)  # run() returns after a stop
    assert 0.3 < time.monotonic() - t0 < 2
    assert finished == [1] and worker.handled == 1
    await worker.stop()  # idempotent
    info = await settled(bus, stream, "w")
    assert info["ack_floor"]["stream_seq"] == 1 and info["num_redelivered"] == 0


async def test_a_handler_past_the_grace_is_cancelled_and_redelivered_at_once(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, prefix = await make_stream("w", consumer_config={"ack_wait": 30 * SECOND})
    await bus.publish(f"{prefix}.stuck", {"n": 1})
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def handle(msg: natsbus.Message) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    worker = bus.worker(stream, "w", handle)
    run = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    t0 = time.monotonic()
    await worker.stop(grace=0.3)
    await run
    assert 0.25 < time.monotonic() - t0 < 2
    assert cancelled == [True] and worker.handled == 0
    # Nak'ed without delay: the next worker gets it now, not after ack_wait (30 s).
    async with bus.consume(stream, "w") as c:
        msg = await c.next(timeout=2)
        assert msg is not None and msg.seq == 1 and msg.delivered == 2
        await msg.ack()


async def test_stop_releases_messages_no_handler_got(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, prefix = await make_stream("w", consumer_config={"ack_wait": 30 * SECOND})
    total = 300
    await bus.publish_many([(f"{prefix}.job", {"n": i}) for i in range(total)])
    handled: list[int] = []
    worker: natsbus.Worker[Any]

    async def handle(msg: natsbus.Message) -> None:
        handled.append(msg.seq)
        if len(handled) == 100:
            worker.stop()  # from inside a handler: this one still finishes
        await asyncio.sleep(0.001)

    worker = bus.worker(stream, "w", handle, concurrency=2)
    await asyncio.wait_for(worker.run(), 10)
    assert 100 <= len(handled) < total
    # Everything else is available to the next worker at once.
    t0 = time.monotonic()
    rest: set[int] = set()
    async with bus.consume(stream, "w") as c:
        while len(rest) < total - len(handled) and time.monotonic() - t0 < 5:
            for m in await c.fetch(500, timeout=0.5):
                rest.add(m.seq)
                await m.ack()
    assert time.monotonic() - t0 < 3
    assert rest.isdisjoint(handled)
    assert rest | set(handled) == set(range(1, total + 1))


async def test_cancelling_run_stops_the_worker_and_reraises(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, prefix = await make_stream("w", consumer_config={"ack_wait": 30 * SECOND})
    await bus.publish(f"{prefix}.a", {"n": 1})
    started = asyncio.Event()
    finished: list[int] = []

    async def handle(msg: natsbus.Message) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(msg.seq)

    worker = bus.worker(stream, "w", handle)
    run = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert worker.state == "stopped" and finished == [1]  # finished within the short grace
    info = await settled(bus, stream, "w")
    assert info["ack_floor"]["stream_seq"] == 1


# -- dead letters when workers crash ---------------------------------------------------------


class Proc:
    """A worker subprocess (tests/support/worker_proc.py) and its stdout lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, url: str, *args: str, **env: str) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER_PROC),
            *args,
            env={**os.environ, "NATS_URL": url, **env},
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def line(self, timeout: float = 10.0) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        text = raw.decode().strip()
        if text:
            self.lines.append(text)
        return text

    async def until(self, prefix: str, timeout: float = 10.0) -> str:
        while True:
            text = await self.line(timeout)
            if text.startswith(prefix):
                return text
            if not text:
                raise AssertionError(f"process ended before {prefix!r}: {self.lines}")

    async def reap(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


@pytest.fixture
async def procs() -> AsyncIterator[list[Proc]]:
    """Worker subprocesses started by a test; all killed and reaped afterwards."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for p in started:
            await p.reap()


async def test_a_worker_killed_on_every_delivery_ends_with_one_dead_letter(
    bus: natsbus.Bus, make_stream: StreamFactory, nats_url: str, procs: list[Proc]
) -> None:
    """SIGKILL inside the handler, three times (max_deliver 3): the server gives up, the
    restarted worker hears it (the advisory), dead-letters the message once and removes it
    from the workqueue stream so nothing is stranded there."""
    dl_stream, dl_subject = await dead_letter_stream(make_stream)
    stream, prefix = await make_stream(
        "w",
        retention="workqueue",
        consumer_config=dl_config(dl_subject, max_deliver=3, ack_wait=2 * SECOND),
    )
    await bus.publish(f"{prefix}.poison", {"boom": True}, headers={"Trace-Id": "k"})
    deliveries: list[str] = []
    for _ in range(3):
        proc = await Proc.start(nats_url, "sigkill", stream, "w")
        procs.append(proc)
        # ("ready" may not come first: the message can arrive, and kill it, before.)
        deliveries.append(await proc.until("got", timeout=10))
        await asyncio.wait_for(proc.proc.wait(), 5)
        assert proc.proc.returncode == -signal.SIGKILL
    assert deliveries == ["got 1 1", "got 1 2", "got 1 3"]
    survivor = await Proc.start(nats_url, "sigkill", stream, "w")
    procs.append(survivor)
    await survivor.until("ready")
    await wait_until(lambda: message_count(bus, dl_stream), timeout=8, what="the dead letter")
    await wait_until(
        lambda: _is_zero(message_count(bus, stream)), timeout=3, what="the workqueue removal"
    )
    await asyncio.sleep(0.3)
    assert await message_count(bus, dl_stream) == 1
    subject, payload, headers = await stored(bus, dl_stream, 1)
    assert subject == dl_subject and json.loads(payload) == {"boom": True}
    assert headers["Trace-Id"] == "k" and headers["Nats-Msg-Id"] == f"natsbus-dl:{stream}:1"
    assert headers["Natsbus-Dead-Letter-Reason"] == "max deliveries reached (3)"
    assert headers["Natsbus-Dead-Letter-Delivered"] == "3"
    assert headers["Natsbus-Dead-Letter-Sequence"] == "1"
    assert headers["Natsbus-Dead-Letter-Subject"] == f"{prefix}.poison"
    assert survivor.proc.returncode is None  # it never got the message again


async def _is_zero(count: Awaitable[int]) -> bool:
    return await count == 0


async def test_three_workers_on_one_durable_dead_letter_a_poison_message_once(
    bus: natsbus.Bus, make_stream: StreamFactory, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Poison A fails in a handler (max_deliver 1: its first delivery is the last). Poison B
    was taken by a process that hangs (a consumer that never settles it): the server gives
    up after ack_wait and all three workers hear it; the msg id stores it once."""
    dl_stream, dl_subject = await dead_letter_stream(make_stream)
    stream, prefix = await make_stream(
        "w",
        retention="workqueue",
        consumer_config=dl_config(dl_subject, max_deliver=1, ack_wait=SECOND),
    )
    await bus.publish(f"{prefix}.b", {"poison": "b"})  # seq 1
    hung = bus.consume(stream, "w")
    taken = await hung.next(timeout=2)
    assert taken is not None and taken.seq == 1
    await bus.publish(f"{prefix}.a", {"poison": "a"})  # seq 2
    await bus.publish_many([(f"{prefix}.ok", {"n": i}) for i in range(30)])
    calls: list[str] = []

    async def handle(msg: natsbus.Message) -> None:
        calls.append(msg.subject)
        if "poison" in msg.data:
            raise RuntimeError("poison")

    buses = [await natsbus.connect(nats_url, name=f"w{i}") for i in range(3)]
    workers = [b.worker(stream, "w", handle) for b in buses]
    caplog.set_level("WARNING", logger="natsbus.worker")
    try:
        async with workers[0], workers[1], workers[2]:
            await wait_until(
                lambda: _count_is(message_count(bus, dl_stream), 2),
                timeout=5,
                what="both dead letters",
            )
            await wait_until(lambda: _is_zero(message_count(bus, stream)), what="empty stream")
            await asyncio.sleep(0.5)  # late duplicates would show up now
    finally:
        await hung.close()
        for b in buses:
            await b.close()
    assert await message_count(bus, dl_stream) == 2
    letters = [await stored(bus, dl_stream, seq) for seq in (1, 2)]
    reasons = {
        h["Natsbus-Dead-Letter-Sequence"]: h["Natsbus-Dead-Letter-Reason"] for _, _, h in letters
    }
    assert reasons == {
        "1": "max deliveries reached (1)",
        "2": "handler failed on the last allowed delivery (1 of 1): RuntimeError: poison",
    }
    # All three heard the server give up on B and published it; it was stored once.
    assert caplog.text.count(f"{stream}/w seq 1 reached max deliveries (1)") == 3
    assert sum(w.dead_lettered for w in workers) == 2  # duplicates are not counted
    assert calls.count(f"{prefix}.a") == 1 and f"{prefix}.b" not in calls
    assert sum(w.handled for w in workers) == 30


async def _count_is(count: Awaitable[int], want: int) -> bool:
    return await count == want


# -- natsbus.run and signals -----------------------------------------------------------------


async def test_sigterm_to_natsbus_run_finishes_the_handler_acks_and_exits_0(
    bus: natsbus.Bus, make_stream: StreamFactory, nats_url: str, procs: list[Proc]
) -> None:
    stream, prefix = await make_stream("w", consumer_config={"ack_wait": 30 * SECOND})
    service = f"{prefix}svc.ping"
    await bus.publish(f"{prefix}.job", {"n": 1})
    proc = await Proc.start(nats_url, "sigterm", stream, "w", SERVICE_SUBJECT=service)
    procs.append(proc)
    assert await proc.until("got") == "got 1 1"
    reply = await bus.request(service, {}, timeout=2)  # the service runs beside the worker
    assert reply.data == {"pong": True}
    proc.proc.send_signal(signal.SIGTERM)
    rest: list[str] = []
    while True:
        text = await proc.line(timeout=10)
        if not text:
            break
        rest.append(text)
    await asyncio.wait_for(proc.proc.wait(), 5)
    assert proc.proc.returncode == 0
    assert rest == ["done 1", "stopped stopped handled=1", "exit"]
    info = await settled(bus, stream, "w")
    assert info["ack_floor"]["stream_seq"] == 1 and info["num_redelivered"] == 0
    with pytest.raises(natsbus.NoRespondersError):
        await bus.request(service, {}, timeout=1)  # the service stopped too


async def test_natsbus_run_returns_when_its_workers_stop_and_restores_signal_handlers(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, prefix = await make_stream("w")
    await bus.publish_many([(f"{prefix}.job", {"n": i}) for i in range(5)])
    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    during: list[Any] = []
    worker: natsbus.Worker[Any]

    async def handle(msg: natsbus.Message) -> None:
        during.append(signal.getsignal(signal.SIGTERM))
        if worker.handled == 4:
            worker.stop()

    worker = bus.worker(stream, "w", handle)
    await asyncio.wait_for(natsbus.run(worker, grace=1), 10)
    assert worker.handled == 5 and worker.state == "stopped"
    assert during[0] != before[0]  # natsbus.run's handler was in place
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


async def test_natsbus_run_raises_a_failing_workers_error_and_stops_the_others(
    bus: natsbus.Bus, make_stream: StreamFactory
) -> None:
    stream, _ = await make_stream("w")

    async def handle(msg: natsbus.Message) -> None: ...

    good = bus.worker(stream, "w", handle)
    bad = bus.worker(stream, "no-such-durable", handle)
    with pytest.raises(natsbus.ConsumerNotFoundError):
        await asyncio.wait_for(natsbus.run(good, bad), 10)
    assert good.state == "stopped"


async def test_natsbus_run_validates_its_arguments(bus: natsbus.Bus) -> None:
    with pytest.raises(natsbus.InvalidArgumentError, match="needs at least one Worker"):
        await natsbus.run()
    with pytest.raises(natsbus.InvalidArgumentError, match=r"got str$"):
        await natsbus.run("worker")  # type: ignore[arg-type]
    pending = bus.serve("never.awaited", lambda m: None)
    with pytest.raises(natsbus.InvalidArgumentError, match=r"forget to await bus\.serve"):
        await natsbus.run(pending)  # type: ignore[arg-type]
    pending.close()  # type: ignore[attr-defined]
    with pytest.raises(natsbus.InvalidArgumentError, match="grace must be"):
        await natsbus.run(bus.worker("S", "w", print), grace=-1)


def readme_block(heading: str) -> str:
    """The first ```python block under ``heading`` in the README."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readme_worker_example_runs_and_stops_on_sigterm(
    fresh_server: NatsServer, tmp_path: Path
) -> None:
    script = tmp_path / "metric_agent.py"
    script.write_text(readme_block("## Workers"))
    env = {**os.environ, "NATS_URL": fresh_server.url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        async with natsbus.connect(fresh_server.url) as bus:
            await wait_until(
                lambda: _has_consumer(bus, "AGENT_TASKS", "metric_agent"), what="the topology"
            )
            await bus.publish("tasks.cpu", {"id": 1, "host": "web-1"})
            await bus.publish("tasks.cpu", {"id": 2, "host": ""})  # Reject
            await bus.publish("tasks.cpu", {"id": "three"})  # does not decode into Task
            await bus.publish("tasks.cpu", {"id": 4, "host": "web-4"})
            assert proc.stdout is not None
            lines = [
                (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
                for _ in range(2)
            ]
            assert lines == ["task 1 on web-1 (delivery 1)", "task 4 on web-4 (delivery 1)"]
            info = await settled(bus, "AGENT_TASKS", "metric_agent")
            assert info["num_redelivered"] == 0
            assert await message_count(bus, "AGENT_TASKS") == 0  # workqueue: all settled
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 10)
            assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _has_consumer(bus: natsbus.Bus, stream: str, durable: str) -> bool:
    try:
        await bus.consumer_info(stream, durable)
    except (natsbus.StreamNotFoundError, natsbus.ConsumerNotFoundError):
        return False
    return True


async def test_closing_the_bus_under_a_running_worker_ends_run_with_closed_error(
    nats_url: str, make_stream: StreamFactory
) -> None:
    stream, _ = await make_stream("w")

    async def handle(msg: natsbus.Message) -> None: ...

    own = await natsbus.connect(nats_url)
    worker = own.worker(stream, "w", handle, concurrency=2)
    run = asyncio.ensure_future(worker.run())
    await wait_until(lambda: worker.state == "running", what="the worker to start")
    await own.close()
    with pytest.raises(natsbus.ClosedError):
        await asyncio.wait_for(run, 5)
    assert worker.state == "stopped"
