"""Durable consumption and serving, on top of the Rust message sources.

The per-message path stays in Python only for what must be Python: handing
out a message that Rust already buffered and converted. ``__anext__`` pops
from a local deque; it asks Rust for a new batch only when the deque is
empty, and awaits the runtime only when Rust has nothing buffered either.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, Optional, TypeVar, Union

from . import _otel
from ._micro import Micro, check_identity, default_name
from ._natsbus import Message
from .errors import ClosedError, InvalidArgumentError

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
"""The default byte bound of a consumer's prefetch (8 MiB)."""

if TYPE_CHECKING:
    from ._bus import Bus
    from ._natsbus import MessageSource

log = logging.getLogger("natsbus")

Handler = Callable[[Message[Any]], Union[Any, Awaitable[Any]]]

T = TypeVar("T")


class Consumer(Generic[T]):
    """Iterate a durable consumer: ``async for msg in bus.consume(stream, durable)``.

    Use it as an async context manager so it is closed (buffered, unhanded
    messages released; queued acks flushed) when you are done::

        async with bus.consume("ORDERS", "worker") as orders:
            async for msg in orders:
                handle(msg.data)
                await msg.ack()

    Messages are prefetched in Rust, and only as many as the application is
    about to process: the prefetch starts at one message, doubles while the
    application takes messages faster than they arrive (and the server has
    more), and halves when what it takes had waited over 100 ms. A pull
    request asks for at most ``batch`` messages; at most two batches (and no
    more than the consumer's ``max_ack_pending``) and ``max_bytes`` bytes are
    held at once. What a process holds unseen is spent when it stops (each
    delivery counts against ``max_deliver``) and is kept from the other
    workers of the durable. ``model`` decodes ``msg.data`` into a pydantic
    model, dataclass or any callable taking the decoded JSON.
    """

    __slots__ = (
        "_batch",
        "_buf",
        "_bus",
        "_closed",
        "_closing",
        "_durable",
        "_max_bytes",
        "_model",
        "_source",
        "_stream",
    )

    def __init__(
        self,
        bus: Bus,
        stream: str,
        durable: str,
        model: Any = None,
        batch: int = 500,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if batch < 1:
            raise InvalidArgumentError("batch must be at least 1")
        if max_bytes < 1:
            raise InvalidArgumentError("max_bytes must be at least 1")
        self._bus = bus
        self._stream = stream
        self._durable = durable
        self._model = model
        self._batch = batch
        self._max_bytes = max_bytes
        self._source: Optional[MessageSource] = None
        self._buf: deque[Message[T]] = deque()
        self._closed = False
        self._closing: Optional[asyncio.Future[None]] = None

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def durable(self) -> str:
        return self._durable

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> Consumer[T]:
        """Check the stream and consumer exist and start prefetching.

        Raises ``StreamNotFoundError`` / ``ConsumerNotFoundError`` naming what
        is missing. Called for you by ``async with`` and on first iteration.
        """
        if self._closed:
            raise ClosedError(f"consumer {self._stream}/{self._durable} is closed")
        if self._source is None:
            self._source = await self._bus._core.open_consumer(
                self._stream,
                self._durable,
                model=self._model,
                batch=self._batch,
                max_bytes=self._max_bytes,
                held=self._buf,
            )
        return self

    async def close(self) -> None:
        """Stop consuming: ask the server for nothing more, flush queued acks
        (the server confirms it read them), and release (nak) every message
        received but never handed out, so another worker gets it at once.

        Messages already handed out can still be acked afterwards while the
        bus is open. Safe to call from another task (a signal handler):
        iteration then ends."""
        if not self._closed:
            self._closed = True
            source, self._source = self._source, None
            released = list(self._buf)
            self._buf.clear()
            if source is not None:
                # Rust releases them after unsubscribing, so their redelivery
                # goes to another consumer rather than to our own open pull.
                self._closing = asyncio.ensure_future(source.close(released))
        if self._closing is not None:
            # Later calls wait for the same close; cancelling the caller does
            # not stop it.
            await asyncio.shield(self._closing)

    async def __aenter__(self) -> Consumer[T]:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Consumer[T]:
        return self

    async def __anext__(self) -> Message[T]:
        buf = self._buf
        if buf:
            return buf.popleft()
        source = self._source
        if source is None:
            if self._closed:
                raise StopAsyncIteration
            await self.start()
            source = self._source
            assert source is not None
        try:
            msgs = source.take()
            if not msgs:
                msgs = await source.wait()
        except ClosedError:
            # Closed by close() (from any task): the iteration ends. Closed
            # under it (the bus closed): that is an error.
            if self._closed:
                raise StopAsyncIteration from None
            raise
        if self._closed:
            # Closed while the batch was on its way: nobody will take it.
            source.release(msgs)
            raise StopAsyncIteration
        buf.extend(msgs)
        return buf.popleft()

    async def next(self, timeout: Optional[float] = None) -> Optional[Message[T]]:
        """The next message, or None if none arrives within ``timeout`` seconds."""
        if self._buf:
            return self._buf.popleft()
        if self._closed:
            raise ClosedError(f"consumer {self._stream}/{self._durable} is closed")
        source = self._source
        if source is None:
            await self.start()
            source = self._source
            assert source is not None
        msgs = source.take()
        if not msgs:
            msgs = await source.wait(None, timeout)
        if self._closed:
            source.release(msgs)
            raise ClosedError(f"consumer {self._stream}/{self._durable} is closed")
        if not msgs:
            return None
        self._buf.extend(msgs)
        return self._buf.popleft()

    async def fetch(self, max_messages: int = 100, timeout: float = 1.0) -> list[Message[T]]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` seconds
        in all. May return fewer, or an empty list when nothing arrives."""
        if max_messages < 1:
            raise InvalidArgumentError("max_messages must be at least 1")
        if timeout < 0:
            raise InvalidArgumentError("timeout must not be negative")
        source = self._source
        if source is None:
            await self.start()
            source = self._source
            assert source is not None
        out: list[Message[T]] = []
        buf = self._buf
        while buf and len(out) < max_messages:
            out.append(buf.popleft())
        if len(out) < max_messages:
            out.extend(source.take(max_messages - len(out)))
        if out:
            return out
        # Nothing buffered: wait for the first message (asking the server for
        # up to max_messages), then take what is there.
        got = await source.wait(max_messages, timeout)
        if self._closed:
            source.release(got)
            raise ClosedError(f"consumer {self._stream}/{self._durable} is closed")
        return got

    async def batches(
        self, max_messages: int = 100, timeout: float = 1.0
    ) -> AsyncIterator[list[Message[T]]]:
        """Yield lists of messages, each at most ``max_messages`` long.

        A batch is handed over as soon as ``max_messages`` are buffered, or
        ``timeout`` seconds after its first message arrived. Batches are never
        empty: when the stream is idle this waits. Closes the consumer when
        the iteration ends if it was not started by ``async with``.
        """
        if max_messages < 1:
            raise InvalidArgumentError("max_messages must be at least 1")
        owned = self._source is None
        await self.start()
        source = self._source
        assert source is not None
        # The batch fills in the consumer's deque, so that closing (the
        # consumer or the bus) releases whatever was not yet handed out. The
        # next batch is complete when this one is done, and the one after is on
        # its way (the server then streams without a gap).
        buf = self._buf
        source.keep_ahead(2 * max_messages)
        try:
            while not self._closed:
                try:
                    if len(buf) < max_messages:
                        buf.extend(source.take(max_messages - len(buf)))
                    if not buf:
                        buf.extend(self._unless_closed(source, await source.wait(max_messages)))
                    if len(buf) < max_messages:
                        # One wait fills the rest of the batch, or gives up
                        # after `timeout` with whatever arrived meanwhile.
                        missing = max_messages - len(buf)
                        more = await source.wait(missing, timeout, missing)
                        buf.extend(self._unless_closed(source, more))
                except ClosedError:
                    if self._closed:
                        return
                    raise
                if self._closed:
                    return
                if not buf:
                    continue
                yield [buf.popleft() for _ in range(min(max_messages, len(buf)))]
        finally:
            if not self._closed:
                source.keep_ahead(0)
            if owned:
                await self.close()

    def _unless_closed(self, source: MessageSource, msgs: list[Message[T]]) -> list[Message[T]]:
        """``msgs``, or none if the consumer was closed while they were on
        their way: then they are released for another worker."""
        if self._closed:
            source.release(msgs)
            return []
        return msgs

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("started" if self._source else "new")
        return f"<natsbus.Consumer {self._stream}/{self._durable} {state}>"


class Service:
    """Answers requests on a subject with a handler (see ``Bus.serve``).

    Each request runs ``handler(msg)`` (sync or async); its return value is
    the reply, encoded like ``publish`` (``None`` replies with an empty
    payload). An exception replies with headers ``Nats-Service-Error`` and
    ``Nats-Service-Error-Code: 500`` and is logged to the ``natsbus`` logger.
    """

    def __init__(
        self,
        bus: Bus,
        source: MessageSource,
        subject: str,
        handler: Handler,
        queue: Optional[str],
        max_concurrency: int,
    ) -> None:
        self._bus = bus
        self._source = source
        self.subject = subject
        self.queue = queue
        self._handler = handler
        self._sem = asyncio.Semaphore(max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.handled = 0
        self.failed = 0
        #: The last handler error as text ("" before any), for $SRV.STATS.
        self.last_error = ""
        #: Nanoseconds spent in the handler, all requests together.
        self.processing_ns = 0
        self.micro: Optional[Micro] = None
        self._runner: Optional[asyncio.Task[None]] = None

    def _start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        source = self._source
        while True:
            try:
                msgs = source.take(256)
                if not msgs:
                    msgs = await source.wait(256)
            except ClosedError:
                return
            for msg in msgs:
                await self._sem.acquire()
                task = asyncio.get_running_loop().create_task(self._handle(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Message[Any]) -> None:
        # A SERVER span around the handler, the child of the requester's (OpenTelemetry).
        traced = _otel.serve(msg, self.subject) if _otel.ENABLED else None
        started = time.perf_counter_ns()
        try:
            result = self._handler(msg)
            if inspect.isawaitable(result):
                result = await result
            if msg.reply:
                self._bus._core.respond(msg.reply, b"" if result is None else result)
            self.handled += 1
        except Exception as exc:
            self.failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if traced is not None:
                traced.fail(exc)
            log.exception("handler for %r failed", self.subject)
            if msg.reply:
                text = f"{type(exc).__name__}: {exc}".replace("\r", " ").replace("\n", " ")
                try:
                    self._bus._core.respond(
                        msg.reply,
                        b"",
                        headers={
                            "Nats-Service-Error": text[:512],
                            "Nats-Service-Error-Code": "500",
                        },
                    )
                except Exception:
                    log.exception("could not send the error reply for %r", self.subject)
        finally:
            self.processing_ns += time.perf_counter_ns() - started
            if traced is not None:
                traced.end()
            self._sem.release()

    async def stop(self) -> None:
        """Stop receiving and wait for requests in progress to finish."""
        if self.micro is not None:
            await self.micro.stop()
        await self._source.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def __aenter__(self) -> Service:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def name(self) -> Optional[str]:
        """The name ``nats micro ls`` shows."""
        return self.micro.name if self.micro is not None else None

    @property
    def id(self) -> Optional[str]:
        """This instance's id in the micro protocol."""
        return self.micro.id if self.micro is not None else None

    def __repr__(self) -> str:
        q = f" queue={self.queue!r}" if self.queue else ""
        return f"<natsbus.Service {self.subject!r}{q} handled={self.handled} failed={self.failed}>"


async def _warn_if_a_stream_captures(bus: Bus, subject: str) -> None:
    """A stream capturing the subject also answers every request (with its
    PubAck), and the first answer wins: warn, since that is rarely meant."""
    try:
        found = await bus.jetstream_api("STREAM.NAMES", {"subject": subject}, timeout=2.0)
    except Exception:  # no JetStream, no permission: nothing to warn about
        return
    streams = found.get("streams") or []
    if streams:
        log.warning(
            "stream(s) %s capture subject %r: requests to it may get the stream's "
            "PubAck as their reply instead of this service's answer; serve on a "
            "subject no stream captures",
            ", ".join(streams),
            subject,
        )


async def start_service(
    bus: Bus,
    subject: str,
    handler: Handler,
    queue: Optional[str] = None,
    max_concurrency: int = 100,
    *,
    name: Optional[str] = None,
    version: str = "0.0.0",
    description: Optional[str] = None,
    metadata: Optional[dict[str, str]] = None,
) -> Service:
    if not callable(handler):
        raise InvalidArgumentError("handler must be callable: handler(msg) -> reply data")
    if max_concurrency < 1:
        raise InvalidArgumentError("max_concurrency must be at least 1")
    name = name if name is not None else default_name(subject)
    check_identity(name, version, metadata)
    source = await bus._core.subscribe(subject, queue)
    await _warn_if_a_stream_captures(bus, subject)
    service = Service(bus, source, subject, handler, queue, max_concurrency)
    if _otel.ENABLED:
        _otel.refresh()
    service._start()
    service.micro = Micro(service, name, version, description, metadata)
    await service.micro.start(bus)
    return service
