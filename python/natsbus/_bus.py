"""``natsbus.Bus``: what users do with a connection, on top of the Rust core handle."""

from __future__ import annotations

import datetime
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union, overload

from . import _otel
from ._check import CheckReport, Duration, health_with_topology, parse_options, run_check
from ._consumer import Consumer, Service, start_service
from ._dead_letters import DeadLetter, list_dead_letters, redrive
from ._events import Event, EventCallback, EventPump
from ._probes import Probes, start_probes
from ._readers import Replay, Subscription, replay_args
from .errors import InvalidArgumentError, ServiceError

if TYPE_CHECKING:
    import os

    from ._natsbus import BusCore, Health, Message, Plan, PubAck, Topology

    _Headers = Mapping[str, Union[str, Sequence[str]]]
    _TopologyArg = Union[Topology, Mapping[str, Any], str, os.PathLike[str]]

__all__ = ["Bus"]

_topology_log = logging.getLogger("natsbus.topology")


def _target(change: Any) -> str:
    if change.consumer is None:
        return f"stream {change.stream}"
    return f"consumer {change.stream} > {change.consumer}"


def _log_applied(plan: Plan, create_only: bool) -> None:
    """Log what ``ensure_streams`` changed (INFO) and, create-only, what it left (WARNING)."""
    done = ("create",) if create_only else ("create", "update", "destructive")
    for change in plan.changes:
        if change.action not in done:
            continue
        fields = ", ".join(change.diff) if change.action != "create" else ""
        verb = {"create": "created", "update": "updated", "destructive": "updated (destructive)"}
        detail = f": {fields}" if fields else ""
        _topology_log.info("%s %s%s", verb[change.action], _target(change), detail)
    if create_only:
        left = [c for c in plan.changes if c.action in ("update", "destructive", "blocked")]
        if left:
            _topology_log.warning(
                "create-only: left %d difference%s alone (the server keeps its config): %s",
                len(left),
                "" if len(left) == 1 else "s",
                "; ".join(f"{_target(c)} ({', '.join(c.diff) or c.action})" for c in left),
            )


T = TypeVar("T")


class Bus:
    """The connections to NATS, and everything an agent does with them.

    Create it with ``bus = await natsbus.connect(...)`` or
    ``async with natsbus.connect(...) as bus:``. A bus holds the main
    connection and, unless ``connect(direct_publish=False)``, a second one
    that ``publish()`` uses, driven by the asyncio loop itself (see the
    README). Every method that talks to the server returns an awaitable
    created on the loop that connected the bus.
    """

    __slots__ = ("__weakref__", "_core", "_events")

    def __init__(self, core: BusCore) -> None:
        self._core = core
        self._events: Optional[EventPump] = None

    # -- publishing ----------------------------------------------------------------------------

    def publish(
        self,
        subject: str,
        data: Any,
        *,
        headers: Optional[_Headers] = None,
        msg_id: Optional[str] = None,
        expected_stream: Optional[str] = None,
        expected_last_seq: Optional[int] = None,
        expected_last_subject_seq: Optional[int] = None,
        expected_last_msg_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Awaitable[PubAck]:
        """Publish ``data`` to JetStream and wait for the server's ``PubAck``.

        Objects become JSON (bytes-like are sent untouched, ``str`` as UTF-8).
        ``msg_id`` dedupes within the stream's duplicate window; the
        ``expected_*`` arguments make the publish conditional
        (``ExpectationError``). A subject no stream captures raises
        ``NoStreamError`` at once; while a capturing stream has no leader the
        publish is retried until ``timeout`` (default 5 s), then raises
        ``StreamUnavailableError``.

        With OpenTelemetry installed and a span active, the publish runs in a
        PRODUCER span whose W3C trace context the message carries
        (``traceparent``, ``tracestate``); see the README, "Tracing".
        """
        if _otel.ENABLED and _otel.active():
            return _otel.publish(
                self._core.publish,
                subject,
                data,
                {
                    "headers": headers,
                    "msg_id": msg_id,
                    "expected_stream": expected_stream,
                    "expected_last_seq": expected_last_seq,
                    "expected_last_subject_seq": expected_last_subject_seq,
                    "expected_last_msg_id": expected_last_msg_id,
                    "timeout": timeout,
                },
            )
        return self._core.publish(
            subject,
            data,
            headers=headers,
            msg_id=msg_id,
            expected_stream=expected_stream,
            expected_last_seq=expected_last_seq,
            expected_last_subject_seq=expected_last_subject_seq,
            expected_last_msg_id=expected_last_msg_id,
            timeout=timeout,
        )

    def publish_many(
        self,
        items: Iterable[Union[tuple[str, Any], tuple[str, Any, Optional[_Headers]]]],
        *,
        window: int = 1024,
        timeout: Optional[float] = None,
    ) -> Awaitable[list[PubAck]]:
        """Publish ``(subject, data[, headers])`` items pipelined, in input order.

        At most ``window`` await their acks at once. Returns the acks in input
        order; if any item fails, raises ``BatchPublishError`` with ``.acks``
        (a ``PubAck`` or ``None`` per item) and ``.errors`` (index -> error).
        Cancelling it stops sending what was not sent yet. With a span active
        (OpenTelemetry), every item carries the context of one PRODUCER span.
        """
        if _otel.ENABLED and _otel.active():
            kwargs = {"window": window, "timeout": timeout}
            return _otel.publish_many(self._core.publish_many, items, kwargs)
        return self._core.publish_many(items, window=window, timeout=timeout)

    def publish_core(
        self,
        subject: str,
        data: Any = None,
        *,
        headers: Optional[_Headers] = None,
    ) -> None:
        """Publish on core NATS, fire and forget: no stream, no ack, at most once.

        For notifications a live ``subscribe()`` tail or a queue group reads
        (what ``nc.publish`` is in nats-py). Data is encoded like
        ``publish``; the message is queued in order with acks and replies
        (``await bus.flush()`` waits until it is written). A stream that
        captures the subject still stores it, but nothing waits for its ack.
        """
        self._core.publish_core(subject, b"" if data is None else data, headers=headers)

    @overload
    async def request(
        self,
        subject: str,
        data: Any = None,
        *,
        headers: Optional[_Headers] = None,
        timeout: float = 5.0,
        model: None = None,
    ) -> Message[Any]: ...

    @overload
    async def request(
        self,
        subject: str,
        data: Any = None,
        *,
        headers: Optional[_Headers] = None,
        timeout: float = 5.0,
        model: Callable[..., T],
    ) -> Message[T]: ...

    async def request(
        self,
        subject: str,
        data: Any = None,
        *,
        headers: Optional[_Headers] = None,
        timeout: float = 5.0,
        model: Any = None,
    ) -> Message[Any]:
        """Send a core NATS request and return the reply ``Message``.

        With ``model``, ``reply.data`` decodes into it. Nobody listening
        raises ``NoRespondersError`` at once; a reply carrying a
        ``Nats-Service-Error`` header (what ``serve()`` and NATS micro
        services send when their handler fails) raises ``ServiceError``
        with ``.code`` and ``.description``. With a span active
        (OpenTelemetry), the request runs in a CLIENT span whose context it carries.
        """
        if _otel.ENABLED and _otel.active():
            kwargs: dict[str, Any] = {"headers": headers}
            with _otel.request_span(subject, kwargs):
                return self._check_reply(
                    await self._core.request(
                        subject, data, headers=kwargs["headers"], timeout=timeout, model=model
                    )
                )
        return self._check_reply(
            await self._core.request(subject, data, headers=headers, timeout=timeout, model=model)
        )

    @staticmethod
    def _check_reply(reply: Message[Any]) -> Message[Any]:
        """``reply``, or ``ServiceError`` when it carries a service error header."""
        headers_in = reply.headers
        if "Nats-Service-Error" in headers_in or "Nats-Service-Error-Code" in headers_in:
            code_text = headers_in.get("Nats-Service-Error-Code", "")
            code = int(code_text) if code_text.strip().isdigit() else 500
            raise ServiceError(code, headers_in.get("Nats-Service-Error", ""), reply)
        return reply

    # -- consuming and serving -----------------------------------------------------------------

    @overload
    def consume(
        self,
        stream: str,
        durable: str,
        *,
        model: None = None,
        batch: int = 500,
        max_bytes: int = 8388608,
    ) -> Consumer[Any]: ...

    @overload
    def consume(
        self,
        stream: str,
        durable: str,
        *,
        model: Callable[..., T],
        batch: int = 500,
        max_bytes: int = 8388608,
    ) -> Consumer[T]: ...

    def consume(
        self,
        stream: str,
        durable: str,
        *,
        model: Any = None,
        batch: int = 500,
        max_bytes: int = 8388608,
    ) -> Consumer[Any]:
        """Iterate a durable consumer: ``async with bus.consume(stream, durable) as msgs``.

        Pull and push durables alike (a push consumer has a
        ``deliver_subject``; with a ``deliver_group`` its readers share the
        messages). ``model`` decodes ``msg.data`` (a pydantic model,
        dataclass or callable); ``msg.data`` is then typed as the model.
        For a pull consumer the prefetch adapts to how fast messages are
        taken: pull requests ask for at most ``batch`` messages, and at most
        two batches (no more than the consumer's ``max_ack_pending``) and
        ``max_bytes`` bytes are held. A push consumer gets what the server
        sends, up to its ``max_ack_pending`` (and its flow control).
        """
        self._core.check_open(stream, durable)
        return Consumer(self, stream, durable, model, batch, max_bytes)

    if TYPE_CHECKING:
        from ._worker import Handlers, Worker

    @overload
    def worker(
        self,
        stream: str,
        durable: str,
        handler: Handlers[Any],
        *,
        model: None = None,
        concurrency: int = 1,
    ) -> Worker[Any]: ...

    @overload
    def worker(
        self,
        stream: str,
        durable: str,
        handler: Handlers[T],
        *,
        model: Callable[..., T],
        concurrency: int = 1,
    ) -> Worker[T]: ...

    def worker(
        self,
        stream: str,
        durable: str,
        handler: Handlers[Any],
        *,
        model: Any = None,
        concurrency: int = 1,
    ) -> Worker[Any]:
        """A ``Worker`` running ``handler(msg)`` for every message of a durable consumer.

        ``await worker.run()`` (or ``async with worker:``, or
        ``await natsbus.run(worker)``) consumes until ``worker.stop()``.
        Returning from the handler acks the message, raising naks it with
        the consumer's backoff (default 1 s doubling to 60 s), raising
        ``natsbus.Reject(reason)`` or a payload that does not decode into
        ``model`` terms it (dead-lettered when the consumer declares a
        dead-letter subject). The handler may be sync (run in a thread) or
        async, or a mapping of subject patterns (``*``, ``>``) to handlers:
        the first that matches a message's subject handles it. Up to
        ``concurrency`` handlers run at once. See the README, "Workers".
        """
        from ._worker import Worker

        self._core.check_open(stream, durable)
        return Worker(self, stream, durable, handler, model=model, concurrency=concurrency)

    def serve(
        self,
        subject: str,
        handler: Callable[[Message[Any]], Any],
        *,
        queue: Optional[str] = None,
        max_concurrency: int = 100,
        name: Optional[str] = None,
        version: str = "0.0.0",
        description: Optional[str] = None,
        metadata: Optional[dict[str, str]] = None,
    ) -> Awaitable[Service]:
        """Answer requests on ``subject`` with ``handler(msg)``; returns a running ``Service``.

        The handler may be sync or async; its return value is encoded like
        ``publish``. With ``queue``, instances share the requests.

        The service speaks the NATS micro protocol: ``nats micro ls``,
        ``nats micro info NAME`` and ``nats micro stats NAME`` (and any micro
        client) find it as ``name`` (default: the subject's tokens joined by
        ``-``) with ``version`` (semantic versioning), ``description`` and
        ``metadata``, its endpoint and its request, error and processing-time
        counters.
        """
        self._core.check_open(subject, queue)
        return start_service(
            self,
            subject,
            handler,
            queue,
            max_concurrency,
            name=name,
            version=version,
            description=description,
            metadata=metadata,
        )

    @overload
    def subscribe(
        self,
        subject: str,
        queue: Optional[str] = None,
        model: None = None,
        *,
        capacity: int = 1024,
    ) -> Subscription[Any]: ...

    @overload
    def subscribe(
        self,
        subject: str,
        queue: Optional[str] = None,
        *,
        model: Callable[..., T],
        capacity: int = 1024,
    ) -> Subscription[T]: ...

    def subscribe(
        self,
        subject: str,
        queue: Optional[str] = None,
        model: Any = None,
        *,
        capacity: int = 1024,
    ) -> Subscription[Any]:
        """A core NATS subscription: ``async with bus.subscribe("events.>") as sub``.

        Wildcards allowed; with ``queue``, members of the group share the
        messages. No stream, no acks: what is published while it is open.
        ``model`` decodes ``msg.data`` as in ``consume``.
        """
        self._core.check_open(subject, queue)
        if capacity < 1:
            raise InvalidArgumentError("capacity must be at least 1")
        return Subscription(self, subject, queue, model, capacity)

    @overload
    def replay(
        self,
        stream: str,
        *,
        start_seq: Optional[int] = None,
        start_time: Union[str, datetime.datetime, None] = None,
        last_per_subject: bool = False,
        subjects: Union[str, Sequence[str], None] = None,
        model: None = None,
        follow: bool = False,
        heartbeat: float = 2.0,
    ) -> Replay[Any]: ...

    @overload
    def replay(
        self,
        stream: str,
        *,
        start_seq: Optional[int] = None,
        start_time: Union[str, datetime.datetime, None] = None,
        last_per_subject: bool = False,
        subjects: Union[str, Sequence[str], None] = None,
        model: Callable[..., T],
        follow: bool = False,
        heartbeat: float = 2.0,
    ) -> Replay[T]: ...

    def replay(
        self,
        stream: str,
        *,
        start_seq: Optional[int] = None,
        start_time: Union[str, datetime.datetime, None] = None,
        last_per_subject: bool = False,
        subjects: Union[str, Sequence[str], None] = None,
        model: Any = None,
        follow: bool = False,
        heartbeat: float = 2.0,
    ) -> Replay[Any]:
        """Replay a stream in order: ``async with bus.replay("EVENTS", start_seq=15) as r``.

        Starts at the first message, or at ``start_seq``, at ``start_time``
        (a ``datetime`` or ISO-8601 text), or with the last message of each
        subject (``last_per_subject``); ``subjects`` filters (wildcards
        allowed). No acks and no durable left behind. Without ``follow`` the
        iteration ends after the message that was last in the stream when
        it started; with ``follow=True`` it goes on with new messages.
        The server sends an idle heartbeat every ``heartbeat`` seconds; three
        missed ones make the replay recreate its consumer.
        """
        self._core.check_open(stream)
        args = replay_args(start_seq, start_time, last_per_subject, subjects, model, follow)
        args["heartbeat"] = heartbeat
        return Replay(self, stream, args)

    @overload
    def get_message(
        self,
        stream: str,
        seq: Optional[int] = None,
        last_for_subject: Optional[str] = None,
        *,
        model: None = None,
    ) -> Awaitable[Message[Any]]: ...

    @overload
    def get_message(
        self,
        stream: str,
        seq: Optional[int] = None,
        last_for_subject: Optional[str] = None,
        *,
        model: Callable[..., T],
    ) -> Awaitable[Message[T]]: ...

    def get_message(
        self,
        stream: str,
        seq: Optional[int] = None,
        last_for_subject: Optional[str] = None,
        *,
        model: Any = None,
    ) -> Awaitable[Message[Any]]:
        """One stored message: at ``seq``, or the last on ``last_for_subject``
        (wildcards allowed), or, with neither, the stream's last message.

        Decoded like any message (``.data``, ``.headers``, ``.seq``,
        ``.timestamp``); a missing one raises ``MessageNotFoundError``.
        """
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1):
            raise InvalidArgumentError(f"seq must be a stream sequence (an int >= 1), got {seq!r}")
        return self._core.get_message(stream, seq, last_for_subject, model=model)

    async def dead_letters(self, stream: str, *, limit: Optional[int] = None) -> list[DeadLetter]:
        """The messages of dead-letter ``stream``, oldest first, each with where it
        came from (``.stream``, ``.consumer``, ``.subject``, ``.sequence``,
        ``.delivered``) and ``.reason``; ``.message`` is the stored message."""
        return await list_dead_letters(self, stream, limit=limit)

    async def redrive(
        self, stream: str, *, seqs: Optional[Iterable[int]] = None
    ) -> list[DeadLetter]:
        """Send the dead letters of ``stream`` (all, or those at ``seqs``) back to
        their original subjects, without the dead-letter headers, and remove
        each from ``stream`` once stored. Returns the ones re-driven."""
        return await redrive(self, stream, seqs=seqs)

    # -- JetStream and topology ----------------------------------------------------------------

    def jetstream_api(
        self, subject: str, body: Any = None, *, timeout: float = 5.0
    ) -> Awaitable[dict[str, Any]]:
        """Call the JetStream API: ``jetstream_api("STREAM.INFO.ORDERS")`` returns the answer.

        An error answer raises the matching ``JetStreamError``.
        """
        return self._core.jetstream_api(subject, body, timeout=timeout)

    def stream_info(self, stream: str) -> Awaitable[dict[str, Any]]:
        """A stream's info (``config``, ``state``...); ``StreamNotFoundError`` if missing."""
        return self._core.stream_info(stream)

    def consumer_info(self, stream: str, durable: str) -> Awaitable[dict[str, Any]]:
        """A consumer's info (``config``, ``num_pending``, ``num_ack_pending``...)."""
        return self._core.consumer_info(stream, durable)

    @property
    def topology(self) -> Optional[Topology]:
        """The topology given to ``connect(topology=...)``, if any."""
        return self._core.topology

    @property
    def heals(self) -> bool:
        """True when the bus re-creates its topology's streams and consumers that the
        server loses (``connect(topology=..., heal=True)``, the default)."""
        return self._core.heals

    def plan(
        self, topology: Optional[_TopologyArg] = None, *, allow_destructive: bool = False
    ) -> Awaitable[Plan]:
        """What applying ``topology`` (default: the bus's) would do. Changes nothing."""
        return self._core.plan(topology, allow_destructive=allow_destructive)

    async def ensure_streams(
        self,
        topology: Optional[_TopologyArg] = None,
        *,
        allow_destructive: bool = False,
        create_only: bool = False,
    ) -> Plan:
        """Create and update streams and consumers to match ``topology``; never deletes.

        A blocked change, or a destructive one without ``allow_destructive``,
        raises ``ApplyError`` before anything is changed. Returns the executed
        plan; what it created and updated is logged at INFO (logger
        ``natsbus.topology``).

        ``create_only=True`` (for agents starting during a rollout): create
        what is missing and nothing else. Nothing is updated and nothing
        refused; the differences left alone stay in the returned plan (as
        ``update``/``destructive``/``blocked`` changes) and are logged as one
        WARNING, so an old pod neither crash-loops nor rewrites the newer
        config.
        """
        plan = await self._core.ensure_streams(
            topology, allow_destructive=allow_destructive, create_only=create_only
        )
        _log_applied(plan, create_only)
        return plan

    def verify(self, topology: Optional[_TopologyArg] = None) -> Awaitable[Plan]:
        """Raise ``DriftError`` (with ``.plan``) unless the server matches ``topology``."""
        return self._core.verify(topology)

    def export(self, streams: Optional[Sequence[str]] = None) -> Awaitable[dict[str, Any]]:
        """The live configuration as a topology dict (all streams, or the named ones)."""
        return self._core.export(streams)

    def export_yaml(self, streams: Optional[Sequence[str]] = None) -> Awaitable[str]:
        """The live configuration as a topology file (YAML)."""
        return self._core.export_yaml(streams)

    def status(self, streams: Optional[Sequence[str]] = None) -> Awaitable[dict[str, Any]]:
        """Streams and consumers with their counters (what ``natsbus status`` shows)."""
        return self._core.status(streams)

    # -- the connection ------------------------------------------------------------------------

    async def health(self, timeout: float = 2.0) -> Health:
        """A ``Health`` snapshot: connection, round trip, JetStream, account usage.

        With a topology (``connect(topology=...)``) it also asks the server, at once
        for every declared stream, whether the stream and its declared consumers exist,
        and, for a replicated stream, whether it has a leader and every replica is
        online and current. Each failure is one line in ``.problems`` (``"stream
        ORDERS: replica n3 is offline (lag 14)"``, ``"consumer ORDERS > billing is
        missing"``) and makes ``.ok`` False. Without a topology it is one round trip.
        """
        return await health_with_topology(self, timeout)

    async def check(
        self,
        *,
        lag_warn: Optional[int] = None,
        lag_crit: Optional[int] = None,
        ack_pending_warn: Optional[int] = None,
        ack_pending_crit: Optional[int] = None,
        inactive_warn: Optional[Duration] = None,
        inactive_crit: Optional[Duration] = None,
        streams: Optional[Sequence[str]] = None,
        timeout: float = 5.0,
    ) -> CheckReport:
        """Check the connection, streams and consumers against thresholds (``natsbus check``).

        Streams checked: ``streams`` when given, else the topology's when the bus has
        one (then only its declared consumers, and a declared stream or consumer that
        is missing is CRITICAL), else every stream on the server with its durable
        consumers. Per stream: a replicated one without a leader is CRITICAL, a
        replica offline or not current WARNING. Per consumer: ``lag`` (messages not
        yet delivered), ``ack_pending`` (ack pending reaching ``max_ack_pending``, a
        stalled consumer, is CRITICAL), ``inactive`` (time since the last delivery or
        ack, judged only while messages are pending or unacked), plus redeliveries and
        waiting pulls as measured values.

        A value at or above a ``*_crit`` threshold is CRITICAL, at or above ``*_warn``
        WARNING. Counts are ints; durations seconds or text like ``"5m"``. A consumer's
        own thresholds (declared in the topology, e.g. ``lag_warn: 100``, and kept on
        the server in its metadata) win over these arguments, which are the defaults
        for consumers declaring none. Not connected (or no JetStream) is CRITICAL;
        what cannot be read (an API call timing out after ``timeout`` seconds) is
        UNKNOWN.

        Returns a ``CheckReport``: ``.status`` (``"ok"``, ``"warning"``,
        ``"critical"``, ``"unknown"``), ``.exit_code`` (0, 1, 2, 3), ``.checks``,
        ``.to_dict()``, and Nagios-style text as ``str(report)``.
        """
        options = {
            "lag_warn": lag_warn,
            "lag_crit": lag_crit,
            "ack_pending_warn": ack_pending_warn,
            "ack_pending_crit": ack_pending_crit,
            "inactive_warn": inactive_warn,
            "inactive_crit": inactive_crit,
        }
        return await run_check(self, options=options, streams=streams, timeout=timeout)

    async def serve_probes(
        self,
        port: int,
        host: str = "0.0.0.0",
        *,
        lag_warn: Optional[int] = None,
        lag_crit: Optional[int] = None,
        ack_pending_warn: Optional[int] = None,
        ack_pending_crit: Optional[int] = None,
        inactive_warn: Optional[Duration] = None,
        inactive_crit: Optional[Duration] = None,
        streams: Optional[Sequence[str]] = None,
        timeout: float = 2.0,
        cache: float = 1.0,
        client_timeout: float = 5.0,
    ) -> Probes:
        """Serve ``/healthz`` and ``/readyz`` over HTTP on ``host:port`` (``port=0``: any free one).

        ``GET /healthz`` answers 200 while the bus is connected, else 503, with
        ``health().to_dict()``; ``GET /readyz`` 200 while ``check()`` (with these
        thresholds and ``streams``) is OK or WARNING, else 503, with the report's
        ``to_dict()``. Other paths 404; ``HEAD`` works. Runs on this loop with the
        standard library only; each answer is cached ``cache`` seconds and concurrent
        requests share one check. Returns a ``Probes`` (``.port``, ``.url``); stop it
        with ``await probes.close()`` or ``async with probes:``.
        """
        options = {
            "lag_warn": lag_warn,
            "lag_crit": lag_crit,
            "ack_pending_warn": ack_pending_warn,
            "ack_pending_crit": ack_pending_crit,
            "inactive_warn": inactive_warn,
            "inactive_crit": inactive_crit,
            "streams": streams,
        }
        # Bad thresholds fail here, not in every probe.
        parse_options({k: v for k, v in options.items() if k != "streams"})
        return await start_probes(
            self, port, host, options, timeout=timeout, cache=cache, client_timeout=client_timeout
        )

    def flush(self) -> Awaitable[None]:
        """Wait until everything queued (acks, replies) has reached the server."""
        return self._core.flush()

    def events(self) -> AsyncIterator[Event]:
        """The connection's events from now on, until the bus closes.

        ``async for event in bus.events(): ...`` sees every ``Event`` (lost
        and regained connection, lame duck mode, slow consumers, server
        errors, heals) that is also logged under ``natsbus.``. For a
        callback instead, pass ``connect(on_event=...)``.
        """
        if self._events is None:
            raise InvalidArgumentError(
                "this bus reports no events (it was not made by natsbus.connect)"
            )
        return self._events.stream()

    def _start_events(self, on_event: Optional[EventCallback]) -> None:
        self._events = EventPump(self._core, on_event)
        self._events.start()

    def close(self) -> Awaitable[None]:
        """Close the bus: close its consumers and services, settle every queued ack, drain.

        Later calls wait for the same close. Acks after it raise ``ClosedError``.
        """
        if self._events is not None:
            self._events.stop()
        return self._core.close()

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._core.closed

    @property
    def connected(self) -> bool:
        """True while the main connection is up."""
        return self._core.connected

    @property
    def servers(self) -> str:
        """The configured servers (passwords redacted)."""
        return self._core.servers

    @property
    def name(self) -> Optional[str]:
        """The connection name."""
        return self._core.name

    @property
    def server_version(self) -> str:
        """The version of the server the main connection is on."""
        return self._core.server_version

    def __repr__(self) -> str:
        return repr(self._core)
