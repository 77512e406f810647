"""Workers (``bus.worker(...)``): a handler per message, settled for you.

A worker runs ``concurrency`` lanes. Each lane takes the next message from
one shared :class:`~natsbus.Consumer` and awaits the handler inline, so the
per-message cost is a deque pop, the handler call and a queued ack: there is
no task, timer or clock read per message. One watchdog task per worker sends
``in_progress`` for messages that run (or wait) long, one task listens for the
server's max-deliveries advisories when the consumer declares a dead-letter
subject, and ``stop()`` drains it all.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import contextvars
import inspect
import logging
import signal
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Optional, TypeVar, Union

from . import _otel
from ._consumer import Consumer, Service
from .errors import ClosedError, DecodeError, InvalidArgumentError, JetStreamError

T = TypeVar("T")

if TYPE_CHECKING:
    from types import TracebackType

    from ._bus import Bus
    from ._natsbus import Message, MessageSource

    #: A handler: ``handler(msg)``, sync or async; its return value is ignored.
    Handler = Callable[["Message[T]"], Union[Awaitable[object], object]]
    #: A handler, or a mapping of NATS subject patterns to handlers.
    Handlers = Union[Handler[T], Mapping[str, Handler[T]]]

__all__ = ["DEAD_LETTER_METADATA", "DEFAULT_GRACE", "Reject", "Worker", "default_backoff", "run"]

log = logging.getLogger("natsbus.worker")

DEFAULT_GRACE = 30.0
"""How long ``stop()`` (and ``natsbus.run`` on a signal) lets in-flight handlers finish."""

CANCEL_GRACE = 5.0
"""The grace of the stop that cancelling ``run()`` (or ``natsbus.run``) performs."""

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0

DEAD_LETTER_METADATA = "natsbus.dead_letter"
"""The consumer metadata key holding its dead-letter subject (topology: ``dead_letter:``)."""

MAX_REASON = 512
"""Longest reason (in characters) sent with a term and in ``Natsbus-Dead-Letter-Reason``."""

ROUTE_CACHE_SIZE = 4096
"""Subjects whose handler a mapping worker remembers (the cache is emptied when full)."""

_DL = "Natsbus-Dead-Letter-"
DL_HEADERS = tuple(
    _DL + name for name in ("Stream", "Consumer", "Subject", "Sequence", "Delivered", "Reason")
)

# Headers of the original message that would instruct the server storing the
# dead letter (dedupe, expectations, rollups, TTLs, batches, counters,
# schedules) are not copied: the copy is a plain message of the dead-letter
# stream. The msg id natsbus-dl:<stream>:<seq> replaces Nats-Msg-Id.
_DROPPED_HEADERS = frozenset(
    h.lower() for h in ("Nats-Msg-Id", "Nats-Rollup", "Nats-TTL", "Nats-Incr", *DL_HEADERS)
)
_DROPPED_PREFIXES = ("nats-expected-", "nats-batch-", "nats-schedule")

# err_code of "no message found" (STREAM.MSG.GET / DELETE of a gone sequence).
_NO_MESSAGE = 10037


def default_backoff(delivered: int) -> float:
    """The nak delay after a failed delivery when the consumer declares no ``backoff``:
    1 s after the first delivery, doubling with every delivery, at most 60 s."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(max(delivered, 1) - 1, 16))


def _one_line(text: object) -> str:
    """``text`` on one line (whitespace runs become one space), at most MAX_REASON chars."""
    line = " ".join(str(text).split())
    if len(line) > MAX_REASON:
        line = line[: MAX_REASON - 3] + "..."
    return line


class Reject(Exception):
    """Raise it in a worker's handler to terminate the message: it is never redelivered.

    ``raise natsbus.Reject("bad input")`` terms the message with that reason
    (the server records it in its terminated advisory) and, when the consumer
    declares a dead-letter subject, first publishes a copy there with
    ``Natsbus-Dead-Letter-Reason: bad input``. Use it for messages no retry
    can fix; any other exception naks the message for a later retry.
    """

    def __init__(self, reason: str = "rejected by the handler") -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.reason,))


Reject.__module__ = "natsbus"


# -- subject patterns ----------------------------------------------------------------------------


def _check_pattern(pattern: object) -> tuple[str, ...]:
    """A handler pattern's tokens; InvalidArgumentError saying what to fix."""
    if not isinstance(pattern, str):
        raise InvalidArgumentError(
            f"handler patterns must be subject strings like 'orders.*', got {pattern!r}"
        )
    if not pattern:
        raise InvalidArgumentError(
            "handler pattern '' is empty: use a subject such as 'orders.created', "
            "'orders.*' or 'orders.>'"
        )
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in pattern):
        raise InvalidArgumentError(
            f"handler pattern {pattern!r} contains whitespace or a control character; "
            "subjects cannot"
        )
    tokens = tuple(pattern.split("."))
    for i, token in enumerate(tokens):
        if not token:
            raise InvalidArgumentError(
                f"handler pattern {pattern!r} has an empty token (two dots in a row, or a dot "
                "at either end)"
            )
        if token != "*" and token != ">" and ("*" in token or ">" in token):
            fixed = ".".join("*" if "*" in t else (">" if ">" in t else t) for t in tokens)
            raise InvalidArgumentError(
                f"handler pattern {pattern!r}: '*' and '>' match whole tokens only, so "
                f"{token!r} is not a wildcard; did you mean {fixed!r}?"
            )
        if token == ">" and i != len(tokens) - 1:
            raise InvalidArgumentError(
                f"handler pattern {pattern!r}: '>' matches the rest of the subject and must be "
                "the last token (e.g. 'events.>')"
            )
    return tokens


def _matches(tokens: tuple[str, ...], subject: list[str]) -> bool:
    """NATS matching: ``*`` is one token, a trailing ``>`` one or more."""
    n = len(tokens)
    if tokens[-1] == ">":
        if len(subject) < n:
            return False
        n -= 1
    elif len(subject) != n:
        return False
    for i in range(n):
        t = tokens[i]
        if t != "*" and t != subject[i]:
            return False
    return True


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 (objects with an async __call__)
    return call is not None and inspect.iscoroutinefunction(call)


_Route = tuple[Callable[..., Any], bool]


def _parse_header_block(block: bytes) -> dict[str, list[str]]:
    """``NATS/1.0\\r\\nName: value\\r\\n...`` (a stored message's headers) as name -> values."""
    headers: dict[str, list[str]] = {}
    for line in block.decode("utf-8", "replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name:
            headers.setdefault(name.strip(), []).append(value.strip())
    return headers


class _Done:
    """An awaitable that is already finished (what stopping a worker that never ran returns)."""

    def __await__(self) -> Any:
        return
        yield


_DONE = _Done()


# -- the worker ----------------------------------------------------------------------------------


class Worker(Generic[T]):
    """Runs a handler for every message of a durable consumer: ``bus.worker(...)``.

    ::

        async def handle(msg: natsbus.Message[Task]) -> None:
            await do(msg.data)              # returning acks the message

        worker = bus.worker("AGENT_TASKS", "metric_agent", handle, model=Task, concurrency=8)
        await worker.run()                  # until worker.stop(), or cancellation

    - Returning acks the message. Raising naks it with a delay: the
      consumer's ``backoff`` step for that delivery when it declares one,
      else :func:`default_backoff` (1 s, 2 s, 4 s ... at most 60 s). The
      exception is logged (logger ``natsbus.worker``).
    - ``raise natsbus.Reject(reason)``, a payload that does not decode into
      ``model`` (``DecodeError`` for this message) and, for a mapping, a
      subject no pattern matches, term the message with the reason:
      no redelivery. When the consumer declares a dead-letter subject
      (metadata ``natsbus.dead_letter``, topology ``dead_letter:``), those
      messages, and one whose handler fails on its last allowed delivery
      (``max_deliver``), are first published there (see the README).
    - Async handlers run on the loop; sync handlers run in a thread pool of
      ``concurrency`` threads, so a blocking handler does not stall the loop.
      A handler may settle the message itself (``msg.nak(delay=...)``,
      ``msg.term()``); the worker then leaves it as it is.
    - Up to ``concurrency`` handlers run at once; the consumer's prefetch
      adapts, so a slow worker holds about ``concurrency`` messages and
      leaves the rest to the durable's other workers.
    - A message still being handled (or waiting for a lane) at a quarter to a
      half of its ack deadline gets ``in_progress()`` sent, again and again, so
      long handlers are not redelivered.
    - ``stop(grace)`` stops pulling, releases what no handler got, lets the
      handlers in flight finish for ``grace`` seconds, cancels (and naks, for
      immediate redelivery) the rest and flushes the acks. ``run()`` then
      returns. Cancelling ``run()`` stops the same way with a 5 s grace.

    Counters: ``handled`` (returned: acked), ``failed`` (raised: nak'ed or,
    on the last delivery, dead-lettered), ``rejected`` (termed: Reject,
    undecodable, unrouted) and ``dead_lettered`` (copies this worker stored
    in the dead-letter stream).
    """

    def __init__(
        self,
        bus: Bus,
        stream: str,
        durable: str,
        handler: Handlers[T],
        *,
        model: Optional[Callable[..., T]] = None,
        concurrency: int = 1,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgumentError(
                f"concurrency must be a whole number of handlers >= 1, got {concurrency!r}"
            )
        self._bus = bus
        self._stream = stream
        self._durable = durable
        self._model = model
        self._concurrency = concurrency
        self._single: Optional[_Route] = None
        self._routes: list[tuple[str, tuple[str, ...], _Route]] = []
        self._route_cache: dict[str, Optional[_Route]] = {}
        if isinstance(handler, Mapping):
            if not handler:
                raise InvalidArgumentError(
                    "the handler mapping is empty: map subject patterns to handlers, "
                    "e.g. {'orders.*': on_order}"
                )
            for pattern, fn in handler.items():
                tokens = _check_pattern(pattern)
                if not callable(fn):
                    raise InvalidArgumentError(
                        f"the handler for pattern {pattern!r} is not callable: {fn!r}"
                    )
                self._routes.append((pattern, tokens, (fn, _is_async(fn))))
        elif callable(handler):
            self._single = (handler, _is_async(handler))
        else:
            raise InvalidArgumentError(
                "handler must be callable (handler(msg), sync or async) or a mapping of "
                f"subject patterns to handlers, got {handler!r}"
            )
        self._sync = not self._single[1] if self._single else any(not r[2][1] for r in self._routes)

        # Counters.
        self.handled = 0
        self.failed = 0
        self.rejected = 0
        self.dead_lettered = 0

        # Read from the server at start.
        self._ack_wait = 30.0
        self._backoff: list[float] = []
        self._max_deliver = -1
        self._dead_letter: Optional[str] = None
        self._workqueue = False

        # Run state: new -> starting -> running -> stopping -> stopped.
        self._state = "new"
        self._stopping = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._consumer: Optional[Consumer[Any]] = None
        self._buf: deque[Message[Any]] = deque()
        self._current: list[Optional[Message[Any]]] = [None] * concurrency
        self._lanes: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._advisory_source: Optional[MessageSource] = None
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._done: Optional[asyncio.Future[None]] = None
        self._error: Optional[BaseException] = None
        self._grace = DEFAULT_GRACE
        self._deadline: Optional[float] = None
        self._deadline_moved: Optional[asyncio.Future[None]] = None
        self._shutdown_task: Optional[asyncio.Task[None]] = None
        # The fetching lane (only one waits on the consumer) and the idle ones.
        self._fetching = False
        self._idle: list[asyncio.Future[None]] = []
        self._ran = False
        self._task: Optional[asyncio.Task[None]] = None
        self._started: Optional[asyncio.Future[None]] = None

    # -- what it is ---------------------------------------------------------------------------

    @property
    def stream(self) -> str:
        """The stream of the consumer."""
        return self._stream

    @property
    def durable(self) -> str:
        """The durable consumer's name."""
        return self._durable

    @property
    def concurrency(self) -> int:
        """How many handlers may run at once."""
        return self._concurrency

    @property
    def state(self) -> str:
        """``new``, ``starting``, ``running``, ``stopping`` or ``stopped``."""
        return self._state

    @property
    def in_flight(self) -> int:
        """Handlers running right now."""
        return sum(1 for m in self._current if m is not None)

    @property
    def dead_letter(self) -> Optional[str]:
        """The consumer's dead-letter subject (known once the worker has started)."""
        return self._dead_letter

    def __repr__(self) -> str:
        return (
            f"<natsbus.Worker {self._stream}/{self._durable} {self._state} "
            f"concurrency={self._concurrency} handled={self.handled} failed={self.failed} "
            f"rejected={self.rejected} dead_lettered={self.dead_lettered}>"
        )

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume and handle messages until ``stop()`` (or cancellation); then return.

        Raises ``StreamNotFoundError`` / ``ConsumerNotFoundError`` when they
        are missing, ``InvalidArgumentError`` for a consumer a worker cannot
        settle (``ack_policy`` none, or all with ``concurrency`` > 1), and
        whatever stopped the worker otherwise (``ClosedError`` when the bus
        was closed under it). Cancelling it stops the worker (5 s grace:
        in-flight handlers finish or are nak'ed) and re-raises
        ``CancelledError``. A worker runs once; ``stop()`` before ``run()``
        makes ``run()`` return at once.
        """
        if self._state == "stopped" and not self._ran:
            return  # stopped before it ran
        if self._state != "new":
            raise InvalidArgumentError(
                f"worker {self._stream}/{self._durable} is {self._state}: a worker runs once; "
                "create another with bus.worker(...)"
            )
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._ran = True
        self._state = "starting"
        done = self._done = loop.create_future()
        try:
            await self._start()
        except BaseException:
            self._state = "stopped"
            await self._release_start()
            if not done.done():
                done.set_result(None)
            raise
        finally:
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
        if self._stopping:  # stop() came while starting
            self._launch_shutdown()
        else:
            self._state = "running"
            for slot in range(self._concurrency):
                lane = loop.create_task(self._lane(slot), name=f"natsbus-worker-lane-{slot}")
                lane.add_done_callback(self._lane_done)
                self._lanes.append(lane)
            self._tasks.append(loop.create_task(self._watchdog(), name="natsbus-worker-watchdog"))
            if self._advisory_source is not None:
                self._tasks.append(
                    loop.create_task(
                        self._advisories(self._advisory_source), name="natsbus-worker-advisories"
                    )
                )
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            if not done.done():
                await self._stop_on_cancel(CANCEL_GRACE)
            raise
        if self._error is not None:
            raise self._error

    async def _stop_on_cancel(self, grace: float) -> None:
        stopping = self._begin_stop(grace)
        # A second cancellation leaves the stop running on its own.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(stopping)

    async def _start(self) -> None:
        bus = self._bus
        info = await bus.consumer_info(self._stream, self._durable)
        config = info.get("config") or {}
        where = f"consumer {self._stream}/{self._durable}"
        ack_policy = config.get("ack_policy", "explicit")
        if ack_policy == "none":
            raise InvalidArgumentError(
                f"{where} has ack_policy none: a worker acks, naks and terms each message; "
                "declare it with ack_policy: explicit"
            )
        if ack_policy == "all" and self._concurrency > 1:
            raise InvalidArgumentError(
                f"{where} has ack_policy all, where acking one message acks every earlier one, "
                "also those other handlers are still working on; declare it with "
                "ack_policy: explicit (or use concurrency=1)"
            )
        self._ack_wait = float(config.get("ack_wait") or 30_000_000_000) / 1e9
        self._backoff = [float(ns) / 1e9 for ns in config.get("backoff") or ()]
        self._max_deliver = int(config.get("max_deliver") or -1)
        dead_letter = (config.get("metadata") or {}).get(DEAD_LETTER_METADATA)
        if dead_letter is not None:
            self._dead_letter = self._check_dead_letter(where, dead_letter)
        stream = await bus.stream_info(self._stream)
        self._workqueue = (stream.get("config") or {}).get("retention") == "workqueue"
        if self._dead_letter is not None:
            await self._warn_if_uncaptured(self._dead_letter)
            # Listen before pulling: the server may give up on a message the
            # moment this worker asks for more.
            subject = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self._stream}.{self._durable}"
            try:
                self._advisory_source = await bus._core.subscribe(subject, None)
            except ClosedError:
                raise
            except Exception as exc:
                log.warning(
                    "worker %s/%s: cannot subscribe to %s (%s): messages the server gives up "
                    "on (max_deliver) are not dead-lettered by this worker",
                    self._stream,
                    self._durable,
                    subject,
                    exc,
                )
        if _otel.ENABLED:
            _otel.refresh()  # an SDK set up since the last worker started is seen at once
        if self._sync:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._concurrency,
                thread_name_prefix=f"natsbus-worker-{self._durable}",
            )
        consumer = self._bus.consume(self._stream, self._durable, model=self._model)
        self._consumer = consumer
        await consumer.start()
        self._buf = consumer._buf

    @staticmethod
    def _check_dead_letter(where: str, subject: object) -> str:
        if (
            not isinstance(subject, str)
            or not subject
            or any(c.isspace() for c in subject)
            or any(t in ("", "*", ">") or "*" in t or ">" in t for t in subject.split("."))
        ):
            raise InvalidArgumentError(
                f"{where} declares dead-letter subject {subject!r} (metadata "
                f"{DEAD_LETTER_METADATA!r}): it must be a plain subject without wildcards, "
                "captured by a stream, e.g. 'dead.orders'"
            )
        return subject

    async def _warn_if_uncaptured(self, subject: str) -> None:
        try:
            found = await self._bus.jetstream_api("STREAM.NAMES", {"subject": subject})
        except Exception:  # no permission to list streams: the publish will tell
            return
        if not found.get("streams"):
            log.warning(
                "worker %s/%s: no stream captures its dead-letter subject %r; dead-lettering "
                "will fail (and the messages be nak'ed for retry) until one does",
                self._stream,
                self._durable,
                subject,
            )

    async def _release_start(self) -> None:
        """Undo a start that failed or was cancelled half-way."""
        if self._advisory_source is not None:
            with contextlib.suppress(Exception):
                await self._advisory_source.close()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    # -- the lanes: the hot path --------------------------------------------------------------

    async def _take(self) -> Optional[Message[Any]]:
        """The next message when none is buffered: one lane waits on the consumer, the idle
        ones wait for it (so a batch is shared at once); None when the consumer is closed."""
        buf = self._buf
        consumer = self._consumer
        assert consumer is not None
        loop = asyncio.get_running_loop()
        while not buf:
            if self._fetching:
                idle = loop.create_future()
                self._idle.append(idle)
                try:
                    await idle
                finally:
                    with contextlib.suppress(ValueError):
                        self._idle.remove(idle)
                continue
            self._fetching = True
            try:
                msg = await consumer.__anext__()
            except StopAsyncIteration:
                return None
            finally:
                self._fetching = False
                for idle in self._idle:
                    if not idle.done():
                        idle.set_result(None)
                self._idle.clear()
            return msg
        return buf.popleft()

    async def _lane(self, slot: int) -> None:
        buf = self._buf
        current = self._current
        single = self._single
        decode = self._model is not None
        pool = self._pool
        loop = asyncio.get_running_loop()
        stream = self._stream
        traced: Optional[_otel.Processing] = None
        while True:
            if buf:
                msg = buf.popleft()
            else:
                got = await self._take()
                if got is None:
                    return
                msg = got
            if self._stopping:
                # Arrived after the stop: nobody handles it, release it now.
                self._release(msg)
                continue
            if single is not None:
                fn, is_async = single
            else:
                route = self._route(msg.subject)
                if route is None:
                    await self._unrouted(msg)
                    continue
                fn, is_async = route
            current[slot] = msg
            if _otel.ENABLED:
                # The handler runs in a CONSUMER span, the child of the publisher's.
                traced = _otel.process(msg, stream)
            try:
                if decode:
                    msg.data  # noqa: B018 (decode first: a bad payload is rejected)
                if is_async:
                    await fn(msg)
                else:
                    ctx = contextvars.copy_context()
                    result = await loop.run_in_executor(pool, ctx.run, fn, msg)
                    if inspect.isawaitable(result):
                        await result
            except Reject as exc:
                if traced is not None:
                    traced.fail(exc, f"rejected: {exc.reason}")
                await self._reject(msg, exc.reason, None)
            except DecodeError as exc:
                if traced is not None:
                    traced.fail(exc)
                if exc.seq == msg.seq and exc.subject == msg.subject:
                    await self._reject(msg, str(exc), None)
                else:
                    await self._failed(msg, exc)
            except Exception as exc:
                if traced is not None:
                    traced.fail(exc)
                await self._failed(msg, exc)
            except BaseException as exc:
                # Cancelled (stop's grace ran out) or exiting: redeliver at once.
                if traced is not None:
                    traced.fail(exc)
                self._release(msg)
                raise
            else:
                # (try/except, not contextlib.suppress: this runs for every message)
                try:  # noqa: SIM105
                    await msg.ack()
                except InvalidArgumentError:
                    pass  # the handler settled it itself
                self.handled += 1
            finally:
                current[slot] = None
                if traced is not None:
                    traced.end()
                    traced = None

    def _route(self, subject: str) -> Optional[_Route]:
        cache = self._route_cache
        try:
            return cache[subject]
        except KeyError:
            pass
        tokens = subject.split(".")
        route = next((r for _, pat, r in self._routes if _matches(pat, tokens)), None)
        if len(cache) >= ROUTE_CACHE_SIZE:
            cache.clear()
        cache[subject] = route
        return route

    def _lane_done(self, lane: asyncio.Task[None]) -> None:
        if lane.cancelled():
            return
        exc = lane.exception()
        if self._stopping:
            if exc is not None and not isinstance(exc, ClosedError):
                log.error(
                    "worker %s/%s: a lane failed while stopping",
                    self._stream,
                    self._durable,
                    exc_info=exc,
                )
            return
        if exc is not None:
            if self._error is None:
                self._error = exc
            if not isinstance(exc, ClosedError):
                log.error(
                    "worker %s/%s stopped by an error",
                    self._stream,
                    self._durable,
                    exc_info=exc,
                )
            self._begin_stop(self._grace)
        elif all(t.done() for t in self._lanes):
            self._begin_stop(self._grace)

    # -- settling the unhappy paths -----------------------------------------------------------

    def _where(self, msg: Message[Any]) -> str:
        return (
            f"{self._stream}/{self._durable} seq {msg.seq} (subject {msg.subject!r}, "
            f"delivery {msg.delivered})"
        )

    def _log_extra(self, msg: Message[Any]) -> dict[str, Any]:
        return {
            "stream": self._stream,
            "consumer": self._durable,
            "seq": msg.seq,
            "delivered": msg.delivered,
            "subject": msg.subject,
        }

    def _delay(self, delivered: int) -> float:
        backoff = self._backoff
        if backoff:
            return backoff[min(max(delivered, 1) - 1, len(backoff) - 1)]
        return default_backoff(delivered)

    def _release(self, msg: Message[Any]) -> None:
        """Nak without delay (redelivered at once), unless already settled."""
        with contextlib.suppress(InvalidArgumentError, ClosedError):
            msg.nak()

    def _nak_later(self, msg: Message[Any]) -> float:
        delay = self._delay(msg.delivered)
        with contextlib.suppress(InvalidArgumentError):
            msg.nak(delay=delay)
        return delay

    async def _failed(self, msg: Message[Any], exc: Exception) -> None:
        self.failed += 1
        delivered = msg.delivered
        last = 0 < self._max_deliver <= delivered
        if last and self._dead_letter is not None:
            log.error(
                "handler failed for %s, its last allowed delivery (max_deliver %d): "
                "%s; dead-lettering it",
                self._where(msg),
                self._max_deliver,
                _one_line(f"{type(exc).__name__}: {exc}"),
                exc_info=exc,
                extra=self._log_extra(msg),
            )
            reason = (
                f"handler failed on the last allowed delivery ({delivered} of "
                f"{self._max_deliver}): {type(exc).__name__}: {exc}"
            )
            await self._to_dead_letter(msg, reason)
            return
        delay = self._nak_later(msg)
        log.error(
            "handler failed for %s: %s; nak'ed, redelivery in %.3gs",
            self._where(msg),
            _one_line(f"{type(exc).__name__}: {exc}"),
            delay,
            exc_info=exc,
            extra=self._log_extra(msg),
        )

    async def _reject(self, msg: Message[Any], reason: object, log_as: Optional[str]) -> None:
        self.rejected += 1
        text = _one_line(reason)
        log.warning(
            "%s %s: %s%s",
            log_as or "rejected",
            self._where(msg),
            text,
            "; dead-lettering it" if self._dead_letter else "; terminated",
            extra=self._log_extra(msg),
        )
        if self._dead_letter is not None:
            await self._to_dead_letter(msg, text)
        else:
            with contextlib.suppress(InvalidArgumentError):
                msg.term(reason=text)

    async def _unrouted(self, msg: Message[Any]) -> None:
        patterns = ", ".join(repr(p) for p, _, _ in self._routes)
        await self._reject(
            msg, f"no handler for subject {msg.subject!r} (patterns: {patterns})", "unrouted"
        )

    def _dead_letter_headers(
        self, original: Mapping[str, list[str]], subject: str, seq: int, delivered: int, reason: str
    ) -> dict[str, Union[str, list[str]]]:
        headers: dict[str, Union[str, list[str]]] = {
            name: values
            for name, values in original.items()
            if name.lower() not in _DROPPED_HEADERS
            and not name.lower().startswith(_DROPPED_PREFIXES)
        }
        stream, consumer, subj, sequence, count, why = DL_HEADERS
        headers[stream] = self._stream
        headers[consumer] = self._durable
        headers[subj] = subject
        headers[sequence] = str(seq)
        headers[count] = str(delivered)
        headers[why] = _one_line(reason)
        return headers

    async def _publish_dead_letter(
        self, payload: bytes, headers: Mapping[str, Union[str, list[str]]], seq: int
    ) -> bool:
        """Store the copy; True when stored (by this call, or already: a duplicate)."""
        assert self._dead_letter is not None
        ack = await self._bus.publish(
            self._dead_letter, payload, headers=headers, msg_id=f"natsbus-dl:{self._stream}:{seq}"
        )
        if not ack.duplicate:
            self.dead_lettered += 1
        return True

    async def _to_dead_letter(self, msg: Message[Any], reason: str) -> None:
        """Publish a copy to the dead-letter subject, then term; nak for a retry if it fails."""
        reason = _one_line(reason)
        headers = self._dead_letter_headers(
            msg.headers_all, msg.subject, msg.seq, msg.delivered, reason
        )
        try:
            await self._publish_dead_letter(msg.payload, headers, msg.seq)
        except asyncio.CancelledError:
            self._release(msg)
            raise
        except Exception as exc:
            delay = self._nak_later(msg)
            log.error(
                "could not dead-letter %s to %r (%s: %s): nak'ed instead, redelivery in %.3gs",
                self._where(msg),
                self._dead_letter,
                type(exc).__name__,
                exc,
                delay,
                extra=self._log_extra(msg),
            )
            return
        with contextlib.suppress(InvalidArgumentError):
            msg.term(reason=reason)

    # -- the server gave up: max deliveries ---------------------------------------------------

    async def _advisories(self, source: MessageSource) -> None:
        while True:
            try:
                batch = source.take(64)
                if not batch:
                    batch = await source.wait(64)
            except ClosedError:
                return
            for advisory in batch:
                try:
                    event = advisory.data
                    seq = int(event["stream_seq"])
                    deliveries = int(event.get("deliveries") or 0)
                except Exception as exc:
                    log.warning(
                        "worker %s/%s: unreadable max-deliveries advisory %r: %s",
                        self._stream,
                        self._durable,
                        advisory.payload[:200],
                        exc,
                    )
                    continue
                try:
                    await self._dead_letter_stored(seq, deliveries)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception(
                        "worker %s/%s: dead-lettering seq %d after max deliveries failed",
                        self._stream,
                        self._durable,
                        seq,
                    )

    async def _dead_letter_stored(self, seq: int, deliveries: int) -> None:
        """The server gave up on ``seq`` (its handlers crashed, hung or failed): copy it to
        the dead-letter subject and, in a workqueue stream, delete it so nothing is stranded."""
        stream = self._stream
        try:
            got = await self._bus.jetstream_api(f"STREAM.MSG.GET.{stream}", {"seq": seq})
        except JetStreamError as exc:
            if exc.err_code == _NO_MESSAGE:
                return  # already gone (another worker removed it, or a limit did)
            raise
        stored = got["message"]
        payload = base64.b64decode(stored["data"]) if stored.get("data") else b""
        hdrs = stored.get("hdrs")
        original = _parse_header_block(base64.b64decode(hdrs)) if hdrs else {}
        reason = f"max deliveries reached ({deliveries})"
        headers = self._dead_letter_headers(original, stored["subject"], seq, deliveries, reason)
        delay = 0.5
        for attempt in range(4):
            try:
                await self._publish_dead_letter(payload, headers, seq)
                break
            except Exception as exc:
                if attempt == 3 or self._stopping:
                    log.error(
                        "could not dead-letter %s seq %d (max deliveries reached) to %r: "
                        "%s: %s; it stays in the stream",
                        stream,
                        seq,
                        self._dead_letter,
                        type(exc).__name__,
                        exc,
                    )
                    return
                await asyncio.sleep(delay)
                delay *= 2
        log.warning(
            "%s/%s seq %d reached max deliveries (%d): dead-lettered to %r",
            stream,
            self._durable,
            seq,
            deliveries,
            self._dead_letter,
        )
        if self._workqueue:
            try:
                await self._bus.jetstream_api(f"STREAM.MSG.DELETE.{stream}", {"seq": seq})
            except JetStreamError as exc:
                if exc.err_code != _NO_MESSAGE and "not found" not in str(exc):
                    raise

    # -- in_progress for long handlers --------------------------------------------------------

    def _deadline_of(self, delivered: int) -> float:
        """How long the server waits for a settle of this delivery (backoff overrides
        ack_wait: delivery n gets backoff[n-1])."""
        backoff = self._backoff
        if backoff:
            return backoff[min(max(delivered, 1) - 1, len(backoff) - 1)]
        return self._ack_wait

    async def _watchdog(self) -> None:
        """Every quarter of the shortest ack deadline, send ``in_progress`` for each message
        that has been running (or waiting for a lane) for a quarter of its own deadline since
        it was first seen, i.e. by half its deadline at the latest, and again after each."""
        shortest = min([self._ack_wait, *self._backoff]) if self._backoff else self._ack_wait
        tick = max(shortest / 4, 0.01)
        loop = asyncio.get_running_loop()
        seen: dict[int, tuple[Message[Any], float]] = {}
        consumer = self._consumer
        assert consumer is not None
        while True:
            await asyncio.sleep(tick)
            source = consumer._source
            if source is not None and not consumer.closed and not self._fetching:
                # Every lane is busy, and what the consumer buffered in Rust meanwhile counts
                # against ack_wait too: bring it in view (it stays first in line). Never while
                # a lane waits on the consumer: that lane would miss what was taken.
                with contextlib.suppress(ClosedError):
                    if source.buffered:
                        self._buf.extend(source.take())
            now = loop.time()
            live = [m for m in self._current if m is not None]
            live.extend(self._buf)
            fresh: dict[int, tuple[Message[Any], float]] = {}
            for msg in live:
                key = id(msg)
                entry = seen.get(key)
                if entry is None or entry[0] is not msg:
                    fresh[key] = (msg, now)
                elif now - entry[1] >= self._deadline_of(msg.delivered) / 4 - tick / 100:
                    try:
                        msg.in_progress()
                    except (InvalidArgumentError, ClosedError):
                        continue  # settled meanwhile, or the bus is closed
                    fresh[key] = (msg, now)
                else:
                    fresh[key] = entry
            seen = fresh

    # -- stopping -----------------------------------------------------------------------------

    def stop(self, grace: Optional[float] = None) -> Awaitable[None]:
        """Stop: pull nothing more, release what no handler got, give the handlers in flight
        ``grace`` seconds (default 30), cancel the rest (nak'ed for immediate redelivery),
        flush the acks. ``run()`` returns once it is done.

        Returns an awaitable that completes when the worker has stopped; the stop starts
        at once, so calling it without awaiting (``loop.add_signal_handler(SIGTERM,
        worker.stop)``) works. Idempotent: a later call waits for the same stop, and a
        shorter ``grace`` shortens it. Call it on the worker's loop; from another thread,
        it is handed to that loop and a ``concurrent.futures.Future`` is returned.
        """
        if grace is None:
            grace = DEFAULT_GRACE
        elif isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace >= 0:
            raise InvalidArgumentError(f"grace must be a number of seconds >= 0, got {grace!r}")
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._state == "new":
            return self._begin_stop(float(grace))
        if loop is not None and running is not loop and not loop.is_closed():
            result: concurrent.futures.Future[None] = concurrent.futures.Future()

            async def stopping() -> None:
                await self._begin_stop(float(grace))

            def begin() -> None:
                task = loop.create_task(stopping())
                task.add_done_callback(lambda _: result.set_result(None))

            loop.call_soon_threadsafe(begin)
            return result  # type: ignore[return-value]
        return self._begin_stop(float(grace))

    def _begin_stop(self, grace: float) -> Awaitable[None]:
        """Start (or shorten) the stop; the future of its end."""
        if self._state == "new":
            self._state = "stopped"
            self._stopping = True
            return _DONE
        assert self._loop is not None and self._done is not None
        done = self._done
        now = self._loop.time()
        if self._deadline is None or now + grace < self._deadline:
            self._deadline = now + grace
            self._grace = grace
            moved = self._deadline_moved
            if moved is not None and not moved.done():
                moved.set_result(None)
        if not self._stopping:
            self._stopping = True
            if self._state == "running":
                self._launch_shutdown()
            # starting: run() launches it once the start is done.
        return asyncio.shield(done) if not done.done() else done

    def _launch_shutdown(self) -> None:
        assert self._loop is not None
        self._state = "stopping"
        self._stopping = True
        if self._deadline is None:
            self._deadline = self._loop.time() + self._grace
        if self._shutdown_task is None:
            self._shutdown_task = self._loop.create_task(
                self._shutdown(), name="natsbus-worker-stop"
            )

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        consumer = self._consumer
        assert consumer is not None and self._done is not None
        log.info(
            "stopping worker %s/%s (%d in flight, grace %.3gs)",
            self._stream,
            self._durable,
            self.in_flight,
            self._grace,
        )
        try:
            # Stop pulling and release what no handler got, right away.
            closing = asyncio.ensure_future(self._close_consumer(consumer))
            if self._advisory_source is not None:
                with contextlib.suppress(Exception):
                    await self._advisory_source.close()
            pending = {t for t in (*self._lanes, *self._tasks[1:]) if not t.done()}
            while pending:
                assert self._deadline is not None
                remaining = self._deadline - loop.time()
                if remaining <= 0:
                    break
                moved = self._deadline_moved = loop.create_future()
                _, pending = await asyncio.wait(
                    {*pending, moved}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                moved.cancel()
                pending.discard(moved)
            late = [t for t in pending if not t.done()]
            if late:
                log.warning(
                    "worker %s/%s: %d handler(s) still running after the %.3gs grace: "
                    "cancelled, their messages nak'ed for immediate redelivery",
                    self._stream,
                    self._durable,
                    sum(1 for m in self._current if m is not None),
                    self._grace,
                )
            for task in late:
                task.cancel()
            await asyncio.gather(*self._lanes, *self._tasks[1:], return_exceptions=True)
            # Whatever reached the buffer after the close: nobody will handle it.
            while self._buf:
                self._release(self._buf.popleft())
            await closing
            for task in self._tasks[:1]:
                task.cancel()
            await asyncio.gather(*self._tasks[:1], return_exceptions=True)
            with contextlib.suppress(ClosedError):
                await self._bus.flush()  # the acks of handlers that finished after the close
        except BaseException as exc:
            if self._error is None and not isinstance(exc, asyncio.CancelledError):
                self._error = exc
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self._state = "stopped"
            if not self._done.done():
                self._done.set_result(None)
            log.info(
                "stopped worker %s/%s: handled %d, failed %d, rejected %d, dead-lettered %d",
                self._stream,
                self._durable,
                self.handled,
                self.failed,
                self.rejected,
                self.dead_lettered,
            )

    @staticmethod
    async def _close_consumer(consumer: Consumer[Any]) -> None:
        with contextlib.suppress(ClosedError):
            await consumer.close()

    # -- async with ---------------------------------------------------------------------------

    async def __aenter__(self) -> Worker[T]:
        """Start the worker in the background (``run()`` as a task) once it is consuming;
        leaving the block stops it (default grace) and raises what stopped it, if anything."""
        loop = asyncio.get_running_loop()
        started = self._started = loop.create_future()
        task = self._task = loop.create_task(self.run(), name=f"natsbus-worker-{self._durable}")
        try:
            await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self._stop_on_cancel(CANCEL_GRACE)
            raise
        if task.done():
            task.result()  # the start failed: raise why
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        cancelled = exc_type is not None and issubclass(exc_type, asyncio.CancelledError)
        await asyncio.shield(self.stop(CANCEL_GRACE if cancelled else None))
        task = self._task
        if task is None:
            return
        try:
            await task
        except asyncio.CancelledError:
            if not cancelled:
                raise
        except BaseException:
            if exc_type is None:
                raise


# -- natsbus.run ---------------------------------------------------------------------------------


async def run(*items: Union[Worker[Any], Service], grace: float = DEFAULT_GRACE) -> None:
    """Run workers (and keep services serving) until SIGTERM or SIGINT, then stop them all.

    ::

        worker = bus.worker("AGENT_TASKS", "metric_agent", handle, concurrency=8)
        service = await bus.serve("rca.ask", answer)
        await natsbus.run(worker, service, grace=30.0)

    Installs SIGTERM and SIGINT handlers on the running loop (the previous
    handlers are back when it returns). On a signal, every worker stops
    (``stop(grace)``: in-flight handlers finish, acks are flushed) and every
    service stops; then it returns. A second signal cuts the grace short
    (handlers still running are cancelled and their messages nak'ed). If a
    worker fails, the others are stopped and its error raised. Cancelling it
    stops everything with a 5 s grace and re-raises ``CancelledError``.
    """
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace >= 0:
        raise InvalidArgumentError(f"grace must be a number of seconds >= 0, got {grace!r}")
    if not items:
        raise InvalidArgumentError(
            "natsbus.run() needs at least one Worker (bus.worker(...)) or Service "
            "(await bus.serve(...))"
        )
    workers: list[Worker[Any]] = []
    services: list[Service] = []
    for item in items:
        if isinstance(item, Worker):
            workers.append(item)
        elif isinstance(item, Service):
            services.append(item)
        else:
            hint = " (did you forget to await bus.serve(...)?)" if inspect.isawaitable(item) else ""
            raise InvalidArgumentError(
                "natsbus.run() takes Worker objects (bus.worker(...)) and Service objects "
                f"(await bus.serve(...)), got {type(item).__name__}{hint}"
            )
    if len({id(w) for w in workers}) != len(workers):
        raise InvalidArgumentError("natsbus.run() got the same worker twice")
    loop = asyncio.get_running_loop()
    signalled = loop.create_future()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        name = signal.Signals(signum).name
        if signals == 1:
            log.info(
                "%s: stopping %d worker(s) (grace %.3gs) and %d service(s)",
                name,
                len(workers),
                grace,
                len(services),
            )
            if not signalled.done():
                signalled.set_result(signum)
        else:
            log.warning("%s again: cancelling the handlers still running", name)
            for w in workers:
                w.stop(0)

    restore = _install_signal_handlers(loop, on_signal)
    tasks = [loop.create_task(w.run(), name=f"natsbus-run-{w.durable}") for w in workers]
    error: Optional[BaseException] = None
    try:
        waiting: set[asyncio.Future[Any]] = {signalled, *tasks}
        while True:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if signalled in done:
                break
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                error = failed[0].exception()
                log.error("a worker failed: stopping the others", exc_info=error)
                break
            waiting -= done
            if not (waiting - {signalled}) and not services:
                break  # every worker stopped on its own; nothing left to run
    except asyncio.CancelledError:
        try:
            await _stop_all(workers, services, tasks, CANCEL_GRACE)
        finally:
            restore()
        raise
    try:
        await _stop_all(workers, services, tasks, grace)
    finally:
        restore()
    if error is not None:
        raise error
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _stop_all(
    workers: list[Worker[Any]],
    services: list[Service],
    tasks: list[asyncio.Task[None]],
    grace: float,
) -> None:
    async def quiet(aw: Awaitable[Any]) -> None:
        with contextlib.suppress(Exception):
            await aw

    await asyncio.shield(
        asyncio.gather(
            *(quiet(w.stop(grace)) for w in workers),
            *(quiet(s.stop()) for s in services),
            *(quiet(t) for t in tasks),
        )
    )


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, callback: Callable[[int], None]
) -> Callable[[], None]:
    """SIGTERM and SIGINT call ``callback(signum)``; returns what puts the previous ones back."""
    if threading.current_thread() is not threading.main_thread():
        log.warning("natsbus.run() outside the main thread: no signal handlers installed")
        return lambda: None
    saved: list[tuple[int, Any, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        # A handler the loop itself ran before (loop.add_signal_handler) and the
        # Python-level one (asyncio.run's SIGINT handler, say).
        loop_handlers = getattr(loop, "_signal_handlers", None)
        previous_loop = loop_handlers.get(sig) if isinstance(loop_handlers, dict) else None
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, callback, int(sig))
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            log.warning("natsbus.run(): cannot handle %s here (%s)", sig.name, exc)
            continue
        saved.append((sig, previous, previous_loop))

    def restore() -> None:
        for sig, previous, previous_loop in saved:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
            with contextlib.suppress(Exception):
                if previous_loop is not None:
                    loop.add_signal_handler(sig, previous_loop._callback, *previous_loop._args)
                elif previous is not None:
                    signal.signal(sig, previous)
        saved.clear()

    return restore
