"""OpenTelemetry tracing, when ``opentelemetry-api`` is installed (``natsbus[otel]``).

Publishing (``publish``, ``publish_many``, ``request``) injects the W3C trace
context of a PRODUCER (request: CLIENT) span into the message headers, but
only while a span is active: without one, nothing is added. Workers and
``serve`` extract it and run each handler in a CONSUMER (serve: SERVER) span,
a child of the publisher's, with the messaging semantic-convention
attributes. ``natsbus.otel.span(msg)`` does the same for messages taken from
``consume()``, ``replay()`` or ``subscribe()``.

The cost model: whether OpenTelemetry is importable is looked up once, at
import, without importing it (``ENABLED``). natsbus imports it only once the
application has (``opentelemetry.context`` is in ``sys.modules``: an SDK set
up, a span started, an instrumentation loaded); before that nothing can be
traced, so nothing is done. Without it installed, each hot path pays one
attribute check. With it but no active span, a publish pays one
``get_current_span()``; a worker or a service looks for the propagator's
header names in the message's headers and, when none is there and no SDK
tracer provider is set (nothing would record a root span), does nothing more.

Attribute names follow the OpenTelemetry messaging conventions
(``messaging.*``); NATS has no registered system-specific attributes, so the
stream, its sequence and the delivery count use ``messaging.nats.*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    from ._natsbus import Message

__all__ = ["ENABLED", "active", "extract", "span"]

log = logging.getLogger("natsbus.otel")

SYSTEM = "nats"
STREAM = "messaging.nats.stream.name"
SEQUENCE = "messaging.nats.stream.sequence"
DELIVERY_COUNT = "messaging.nats.message.delivery_count"

#: Whether opentelemetry-api can be imported (decided without importing it);
#: False for good once an import failed.
ENABLED: bool
try:
    ENABLED = importlib.util.find_spec("opentelemetry.trace") is not None
except (ImportError, ValueError):  # a parent set to None in sys.modules, a broken install
    ENABLED = False

_api: Any = None  # the opentelemetry modules, once imported: (trace, context, propagate)
_tracer: Optional[Tracer] = None
_current_span: Callable[..., Any]
_SpanKind: Any
_Status: Any
_StatusCode: Any

# Whether an SDK (a real tracer provider) is set; set_tracer_provider works
# once per process, so True is final. Looked up at most every PROVIDER_RECHECK
# seconds while it is not (and by refresh()).
PROVIDER_RECHECK = 1.0
_provider_set = False
_provider_checked = -PROVIDER_RECHECK

# The global propagator's header names, kept per propagator object.
_propagator: Any = None
_fields: tuple[str, ...] = ()


def _load() -> bool:
    """Import opentelemetry (once); False, and ENABLED off, when it cannot be."""
    global ENABLED, _api, _tracer, _current_span, _SpanKind, _Status, _StatusCode
    if _api is not None:
        return True
    if not ENABLED:
        return False
    try:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
    except ImportError:
        ENABLED = False
        return False
    from ._natsbus import __version__

    _tracer = trace.get_tracer("natsbus", __version__)
    _current_span = trace.get_current_span
    _SpanKind, _Status, _StatusCode = SpanKind, Status, StatusCode
    _api = (trace, context, propagate)
    return True


def _in_use() -> bool:
    """Whether the application uses OpenTelemetry: imported (by its SDK set-up, its own
    spans or an instrumentation), then loaded here too. Until then no span can be
    active and no provider set, so natsbus neither imports it nor does anything."""
    if "opentelemetry.context" not in sys.modules:
        return False
    return _load()


def active() -> bool:
    """True when a valid span is current (a publish then carries its context)."""
    if _api is None and not _in_use():
        return False
    return bool(_current_span().get_span_context().is_valid)


def refresh() -> None:
    """Look up the tracer provider again on the next message (a worker or service starts)."""
    global _provider_checked
    _provider_checked = -PROVIDER_RECHECK


def _recording() -> bool:
    """True once an SDK tracer provider is set (root spans are then worth starting)."""
    global _provider_set, _provider_checked
    if _provider_set:
        return True
    now = time.monotonic()
    if now - _provider_checked < PROVIDER_RECHECK:
        return False
    _provider_checked = now
    trace = _api[0]
    provider = trace.get_tracer_provider()
    _provider_set = not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
    return _provider_set


def _carries_context(headers: Mapping[str, str]) -> bool:
    """True when ``headers`` hold a field of the global propagator (``traceparent``...)."""
    global _propagator, _fields
    propagator = _api[2].get_global_textmap()
    if propagator is not _propagator:
        _fields = tuple(propagator.fields)
        _propagator = propagator
    for name in _fields:  # noqa: SIM110 (a loop: any() and a generator cost more per message)
        if name in headers:
            return True
    return False


def _attributes(operation: str, kind: str, destination: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        "messaging.destination.name": destination,
    }


def _fail(span: Span, exc: BaseException, description: Optional[str] = None) -> None:
    span.record_exception(exc)
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(_Status(_StatusCode.ERROR, description or f"{type(exc).__name__}: {exc}"))


# -- publishing ----------------------------------------------------------------------------------


def _with_context(headers: Any, ctx: Context) -> Any:
    """A copy of ``headers`` (a mapping or None) with the trace context of ``ctx`` added;
    anything else is returned as it is, for the core to reject."""
    if headers is None:
        carrier: dict[str, Any] = {}
    elif isinstance(headers, Mapping):
        carrier = dict(headers)
    else:
        return headers
    _api[2].inject(carrier, context=ctx)
    return carrier


def _msg_id(headers: Any) -> Optional[str]:
    if isinstance(headers, Mapping):
        value = headers.get("Nats-Msg-Id")
        if isinstance(value, str):
            return value
    return None


def _end_on_ack(
    span: Span, fut: Any, on_result: Optional[Callable[[Span, Any], None]]
) -> Awaitable[Any]:
    """End ``span`` when ``fut`` completes (an asyncio future: the same one is returned)."""

    def done(f: asyncio.Future[Any]) -> None:
        try:
            if f.cancelled():
                span.set_attribute("error.type", "cancelled")
            elif f.exception() is not None:
                exc = f.exception()
                assert exc is not None
                _fail(span, exc)
            elif on_result is not None:
                on_result(span, f.result())
        finally:
            span.end()

    if isinstance(fut, asyncio.Future):
        fut.add_done_callback(done)
        return fut

    async def awaiting() -> Any:
        try:
            result = await fut
        except BaseException as exc:
            _fail(span, exc)
            span.end()
            raise
        if on_result is not None:
            on_result(span, result)
        span.end()
        return result

    return awaiting()


def _record_ack(span: Span, ack: Any) -> None:
    stream = getattr(ack, "stream", None)
    if stream is not None:
        span.set_attribute(STREAM, stream)
        span.set_attribute(SEQUENCE, ack.seq)


def publish(
    send: Callable[..., Any], subject: str, data: Any, kwargs: dict[str, Any]
) -> Awaitable[Any]:
    """``send(subject, data, **kwargs)`` in a PRODUCER span whose context the message carries.

    Called only while a span is active (``active()``)."""
    attributes = _attributes("publish", "send", subject)
    msg_id = kwargs.get("msg_id") or _msg_id(kwargs.get("headers"))
    if msg_id:
        attributes["messaging.message.id"] = msg_id
    assert _tracer is not None
    span = _tracer.start_span(f"publish {subject}", kind=_SpanKind.PRODUCER, attributes=attributes)
    kwargs["headers"] = _with_context(kwargs.get("headers"), _api[0].set_span_in_context(span))
    try:
        fut = send(subject, data, **kwargs)
    except BaseException as exc:
        _fail(span, exc)
        span.end()
        raise
    return _end_on_ack(span, fut, _record_ack)


def publish_many(
    send: Callable[..., Any], items: Iterable[Any], kwargs: dict[str, Any]
) -> Awaitable[Any]:
    """``send(items, **kwargs)`` in one PRODUCER span; every item carries its context.

    Items are read as lazily as before (the core encodes them in chunks); the
    span is named ``publish <subject>`` once the batch is done when every
    item went to one subject, else ``publish``."""
    assert _tracer is not None
    span = _tracer.start_span(
        "publish", kind=_SpanKind.PRODUCER, attributes=_attributes("publish", "send", "")
    )
    ctx = _api[0].set_span_in_context(span)
    seen: list[Any] = [0, None, False]  # count, subject, mixed

    def traced() -> Iterator[Any]:
        for item in items:
            if isinstance(item, tuple) and len(item) in (2, 3):
                subject = item[0]
                if seen[0] == 0:
                    seen[1] = subject
                elif subject != seen[1]:
                    seen[2] = True
                seen[0] += 1
                headers = item[2] if len(item) == 3 else None
                yield (subject, item[1], _with_context(headers, ctx))
            else:
                yield item  # the core says what is wrong with it

    def name(span: Span, _acks: Any) -> None:
        count, subject, mixed = seen
        span.set_attribute("messaging.batch.message_count", count)
        if not mixed and isinstance(subject, str):
            span.update_name(f"publish {subject}")
            span.set_attribute("messaging.destination.name", subject)

    def finish(f: asyncio.Future[Any]) -> None:
        name(span, None)

    try:
        fut = send(traced(), **kwargs)
    except BaseException as exc:
        _fail(span, exc)
        span.end()
        raise
    if isinstance(fut, asyncio.Future):
        # Runs before _end_on_ack's callback (callbacks run in order): named, then ended.
        fut.add_done_callback(finish)
        return _end_on_ack(span, fut, None)
    return _end_on_ack(span, fut, name)


@contextlib.contextmanager
def request_span(subject: str, kwargs: dict[str, Any]) -> Iterator[Span]:
    """A CLIENT span around a request; its context goes into ``kwargs["headers"]``."""
    assert _tracer is not None
    span = _tracer.start_span(
        f"request {subject}",
        kind=_SpanKind.CLIENT,
        attributes=_attributes("request", "send", subject),
    )
    kwargs["headers"] = _with_context(kwargs.get("headers"), _api[0].set_span_in_context(span))
    try:
        yield span
    except BaseException as exc:
        _fail(span, exc)
        raise
    finally:
        span.end()


# -- processing ----------------------------------------------------------------------------------


class Processing:
    """A CONSUMER or SERVER span that is current while a handler runs."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span, token: object) -> None:
        self.span = span
        self.token = token

    def fail(self, exc: BaseException, description: Optional[str] = None) -> None:
        """Record that the handler failed (the span's status becomes ERROR)."""
        _fail(self.span, exc, description)

    def end(self) -> None:
        """End the span and make the previous context current again."""
        try:
            _api[1].detach(self.token)
        finally:
            self.span.end()


def _start(msg: Message[Any], name: str, kind: Any, headers: Mapping[str, str]) -> Processing:
    trace, context, propagate = _api
    parent = propagate.extract(headers)
    attributes = _attributes("process", "process", msg.subject)
    msg_id = headers.get("Nats-Msg-Id")
    if msg_id:
        attributes["messaging.message.id"] = msg_id
    stream = msg.stream
    if stream is not None:
        attributes[STREAM] = stream
        attributes[SEQUENCE] = msg.seq
        attributes[DELIVERY_COUNT] = msg.delivered
        consumer = msg.consumer
        if consumer:
            attributes["messaging.consumer.group.name"] = consumer
    assert _tracer is not None
    span = _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
    token = context.attach(trace.set_span_in_context(span, parent))
    return Processing(span, token)


def _start_safely(
    msg: Message[Any], name: str, kind: Any, headers: Mapping[str, str]
) -> Optional[Processing]:
    """``_start``, but a failing propagator or tracer never stops a handler from running."""
    try:
        return _start(msg, name, kind, headers)
    except Exception:
        log.warning("natsbus: could not start the span %r", name, exc_info=True)
        return None


def process(msg: Message[Any], stream: str) -> Optional[Processing]:
    """A worker's CONSUMER span ``process <stream>`` for ``msg``, made current; None when
    the message carries no trace context and no SDK would record a span."""
    if _api is None and not _in_use():
        return None
    headers = msg.headers
    if not _carries_context(headers) and not _recording():
        return None
    return _start_safely(msg, f"process {stream}", _SpanKind.CONSUMER, headers)


def serve(msg: Message[Any], subject: str) -> Optional[Processing]:
    """A service's SERVER span ``process <subject>`` for a request, made current (or None,
    as for ``process``)."""
    if _api is None and not _in_use():
        return None
    headers = msg.headers
    if not _carries_context(headers) and not _recording():
        return None
    return _start_safely(msg, f"process {subject}", _SpanKind.SERVER, headers)


# -- the public helpers (natsbus.otel) -----------------------------------------------------------


def extract(msg: Message[Any]) -> Optional[Context]:
    """The trace context ``msg`` carries (``traceparent``, ``tracestate``...), read with the
    global propagator; None when OpenTelemetry is not installed."""
    if _api is None and not _load():
        return None
    context: Context = _api[2].extract(msg.headers)
    return context


@contextlib.contextmanager
def span(msg: Message[Any], name: Optional[str] = None) -> Iterator[Optional[Span]]:
    """Run the code in the block as the processing of ``msg``, in a CONSUMER span.

    ::

        async for msg in consumer:
            with natsbus.otel.span(msg):
                await handle(msg.data)
            await msg.ack()

    The span (named ``name``, default ``process <stream>``, or ``process
    <subject>`` for a core NATS message) is a child of the context the
    message carries and current inside the block, with the messaging
    attributes a worker's span has. An exception leaving the block is
    recorded on it (status ERROR) and re-raised. Without OpenTelemetry
    installed the block just runs, and the value is None.
    """
    if _api is None and not _load():
        yield None
        return
    headers = msg.headers
    label = name or f"process {msg.stream or msg.subject}"
    processing = _start(msg, label, _SpanKind.CONSUMER, headers)
    try:
        yield processing.span
    except BaseException as exc:
        processing.fail(exc)
        raise
    finally:
        processing.end()
