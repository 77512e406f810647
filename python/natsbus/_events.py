"""Connection events: logged under ``natsbus.``, handed to callbacks and iterators.

The Rust core reports what happens to the connection (lost, back, lame duck,
slow consumer, server errors) and what healing re-created. One task per bus
reads those reports and

* logs each through :mod:`logging` (``natsbus.connection`` for the connection,
  ``natsbus.heal`` for heals): WARNING for a loss, INFO for a return, ERROR
  for an error the server sent;
* calls the ``on_event`` callback given to ``connect`` (a function or a
  coroutine function taking an :class:`Event`);
* feeds every ``bus.events()`` iterator.

Messages name the server by its name and address, never by a URL that could
carry a password.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

from . import errors

log = logging.getLogger("natsbus.connection")
heal_log = logging.getLogger("natsbus.heal")

EventCallback = Callable[["Event"], Union[Awaitable[None], None]]

#: What each kind of event is logged at.
LEVELS = {
    "disconnected": logging.WARNING,
    "reconnected": logging.INFO,
    "lame_duck": logging.WARNING,
    "slow_consumer": logging.WARNING,
    "server_error": logging.ERROR,
    "client_error": logging.WARNING,
    "closed": logging.INFO,
    "healed": logging.WARNING,
    "heal_failed": logging.WARNING,
    "lagged": logging.WARNING,
}

# Events whose text reads better with the server in it.
_WITH_SERVER = {
    "disconnected": (
        "lost the connection to {server}; reconnecting (publishes and acks wait for it)"
    ),
    "reconnected": "reconnected to {server}",
    "lame_duck": "{server} entered lame duck mode (it is shutting down); moving to another server",
}


@dataclass(frozen=True)
class Event:
    """Something that happened to a bus's connection.

    ``kind`` is one of ``"disconnected"``, ``"reconnected"``, ``"lame_duck"``,
    ``"slow_consumer"``, ``"server_error"`` (permission violations among
    them), ``"client_error"``, ``"closed"``, ``"healed"`` (declared streams or
    consumers re-created), ``"heal_failed"`` and ``"lagged"`` (events were
    missed). ``message`` is the line that was logged; ``server`` the server
    connected to when the event was read; ``time`` seconds since the epoch.
    """

    kind: str
    message: str
    server: str
    time: float

    @property
    def level(self) -> int:
        """The :mod:`logging` level this event is logged at."""
        return LEVELS.get(self.kind, logging.INFO)


def _event(raw: tuple[str, str, float, str]) -> Event:
    kind, message, time, server = raw
    template = _WITH_SERVER.get(kind)
    if template is not None:
        message = template.format(server=server)
    return Event(kind=kind, message=message, server=server, time=time)


class EventPump:
    """Reads one bus's events until the bus closes."""

    def __init__(self, core: Any, callback: Optional[EventCallback]) -> None:
        self._core = core
        self._callback = callback
        self._queues: set[asyncio.Queue[Optional[Event]]] = set()
        self._task: Optional[asyncio.Task[None]] = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="natsbus-events")

    async def _run(self) -> None:
        try:
            while True:
                try:
                    raw = await self._core.next_event()
                except errors.ClosedError:
                    return
                event = _event(raw)
                (heal_log if event.kind.startswith("heal") else log).log(
                    event.level, "%s", event.message
                )
                for q in self._queues:
                    q.put_nowait(event)
                if self._callback is not None:
                    await self._call(event)
        finally:
            for q in self._queues:
                q.put_nowait(None)

    async def _call(self, event: Event) -> None:
        assert self._callback is not None
        try:
            result = self._callback(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("the on_event callback failed on a %s event", event.kind)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for q in self._queues:
            q.put_nowait(None)
        self._queues.clear()

    def stream(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Optional[Event]] = asyncio.Queue()
        if self._task is None or self._task.done():
            queue.put_nowait(None)
        else:
            self._queues.add(queue)
        return _Events(self, queue)

    def forget(self, queue: asyncio.Queue[Optional[Event]]) -> None:
        self._queues.discard(queue)


class _Events:
    """``bus.events()``: the events from now on, until the bus closes."""

    def __init__(self, pump: EventPump, queue: asyncio.Queue[Optional[Event]]) -> None:
        self._pump = pump
        self._queue = queue

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Event:
        event = await self._queue.get()
        if event is None:
            self._pump.forget(self._queue)
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        self._pump.forget(self._queue)
