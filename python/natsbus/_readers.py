"""Readers that take no acks: a core NATS subscription and an ordered replay.

Both hand out messages the way ``Consumer`` does (a local deque filled from
Rust in batches) and close the same way: ``async with`` or ``close()``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, Optional, TypeVar, Union

from .errors import ClosedError, InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ._bus import Bus
    from ._natsbus import Message, MessageSource

T = TypeVar("T")

__all__ = ["Replay", "Subscription", "rfc3339"]


class _Reader(Generic[T]):
    """What a subscription and a replay share: start on demand, iterate
    from a local buffer, close once."""

    __slots__ = ("_buf", "_bus", "_closed", "_closing", "_source")

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._source: Optional[MessageSource] = None
        self._buf: deque[Message[T]] = deque()
        self._closed = False
        self._closing: Optional[asyncio.Future[None]] = None

    def _open(self) -> Awaitable[MessageSource]:
        raise NotImplementedError

    def _what(self) -> str:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """True once closed (or, for a replay without ``follow``, once it ended)."""
        return self._closed

    async def start(self) -> _Reader[T]:
        """Open it on the server. Called for you by ``async with`` and on
        first iteration; errors (a missing stream, a bad subject) raise here."""
        if self._closed:
            raise ClosedError(f"{self._what()} is closed")
        if self._source is None:
            self._source = await self._open()
        return self

    async def close(self) -> None:
        """Stop receiving. Safe to call from another task: iteration then ends."""
        if not self._closed:
            self._closed = True
            source, self._source = self._source, None
            self._buf.clear()
            if source is not None:
                self._closing = asyncio.ensure_future(source.close())
        if self._closing is not None:
            await asyncio.shield(self._closing)

    def __aiter__(self) -> _Reader[T]:
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
            if self._closed:
                raise StopAsyncIteration from None
            if source.finished:
                await self.close()
                raise StopAsyncIteration from None
            raise
        buf.extend(msgs)
        return buf.popleft()

    async def next(self, timeout: Optional[float] = None) -> Optional[Message[T]]:
        """The next message, or None if none arrives within ``timeout`` seconds
        (or the replay ended)."""
        try:
            if self._buf:
                return self._buf.popleft()
            if timeout is None:
                return await self.__anext__()
            return await asyncio.wait_for(self.__anext__(), timeout)
        except (StopAsyncIteration, asyncio.TimeoutError):
            return None

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Subscription(_Reader[T]):
    """A core NATS subscription: ``async with bus.subscribe("events.>") as sub``.

    Every message published on a matching subject while it is open (or, with
    ``queue``, this member's share of them), with no stream and no acks: a
    live tail, advisories, a queue group of workers over core NATS. Messages
    arrive in the order the server sends them; up to ``capacity`` wait in
    the buffer, beyond that the server drops messages for this slow
    subscriber (core NATS is at-most-once).
    """

    __slots__ = ("_capacity", "_model", "queue", "subject")

    def __init__(
        self, bus: Bus, subject: str, queue: Optional[str], model: Any, capacity: int
    ) -> None:
        super().__init__(bus)
        self.subject = subject
        self.queue = queue
        self._model = model
        self._capacity = capacity

    def _open(self) -> Awaitable[MessageSource]:
        return self._bus._core.subscribe(
            self.subject, self.queue, self._capacity, model=self._model
        )

    def _what(self) -> str:
        return f"subscription to {self.subject!r}"

    async def __aenter__(self) -> Subscription[T]:
        await self.start()
        return self

    def __repr__(self) -> str:
        q = f" queue={self.queue!r}" if self.queue else ""
        state = "closed" if self._closed else ("open" if self._source else "new")
        return f"<natsbus.Subscription {self.subject!r}{q} {state}>"


def rfc3339(value: Union[str, _dt.datetime]) -> str:
    """``start_time`` as the server takes it: RFC 3339 in UTC.

    A ``datetime`` without a time zone is taken as local time (as
    ``datetime.astimezone`` does); text is ISO 8601 (``2026-12-02T07:00:00Z``,
    with an offset, or a date alone).
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                parsed = _dt.datetime.combine(_dt.date.fromisoformat(text), _dt.time())
            else:
                parsed = _dt.datetime.fromisoformat(
                    text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
                )
        except ValueError:
            raise InvalidArgumentError(
                f"start_time {value!r} is not ISO-8601 time (for example "
                "'2026-12-02T07:00:00Z' or '2026-12-02T08:00:00+01:00')"
            ) from None
        value = parsed
    elif not isinstance(value, _dt.datetime):
        raise InvalidArgumentError(
            f"start_time must be a datetime or ISO-8601 text, got {type(value).__name__}"
        )
    utc = value.astimezone(_dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Replay(_Reader[T]):
    """An ordered replay of a stream: ``async with bus.replay("EVENTS") as r``.

    An ephemeral consumer on the server (no acks, nothing left behind when
    it closes) delivers every message from the start point exactly once and
    in stream order. It recreates itself after the next delivered sequence
    when a message went missing, heartbeats stop, the connection is lost or
    the server restarts, so nothing is skipped or repeated. Without
    ``follow`` the iteration ends after the message that was last in the
    stream when it started; with ``follow=True`` it goes on with new messages.
    """

    __slots__ = ("_args", "stream")

    def __init__(self, bus: Bus, stream: str, args: dict[str, Any]) -> None:
        super().__init__(bus)
        self.stream = stream
        self._args = args

    def _open(self) -> Awaitable[MessageSource]:
        return self._bus._core.open_replay(self.stream, **self._args)

    def _what(self) -> str:
        return f"replay of {self.stream}"

    async def __aenter__(self) -> Replay[T]:
        await self.start()
        return self

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._source else "new")
        follow = " follow" if self._args.get("follow") else ""
        return f"<natsbus.Replay {self.stream}{follow} {state}>"


def replay_args(
    start_seq: Optional[int],
    start_time: Union[str, _dt.datetime, None],
    last_per_subject: bool,
    subjects: Union[str, Sequence[str], None],
    model: Any,
    follow: bool,
) -> dict[str, Any]:
    """``replay()``'s arguments as the core takes them (checked here or there)."""
    if start_seq is not None:
        if isinstance(start_seq, bool) or not isinstance(start_seq, int):
            raise InvalidArgumentError(
                f"start_seq must be a stream sequence (int), got {type(start_seq).__name__}"
            )
        if start_seq < 1:
            raise InvalidArgumentError(
                f"start_seq must be at least 1 (stream sequences start at 1), got {start_seq}"
            )
    if isinstance(subjects, str):
        subjects = [subjects]
    return {
        "start_seq": start_seq,
        "start_time": None if start_time is None else rfc3339(start_time),
        "last_per_subject": bool(last_per_subject),
        "subjects": None if subjects is None else list(subjects),
        "follow": bool(follow),
        "model": model,
    }
