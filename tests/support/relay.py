"""A TCP relay on loopback that throttles the server-to-client direction, as a slower link
between a client and a real nats-server would (the server's own slow-consumer limits then
apply, as they would on a real network)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Optional

CHUNK = 64 * 1024


class ThrottledRelay:
    """Forward ``127.0.0.1:<port>`` to ``target``, at most ``rate`` bytes/s towards the client.

    Runs its own event loop in a thread, so the throttling does not compete with the test's
    loop. Use as a context manager; ``url`` is what the client connects to.
    """

    def __init__(self, target_host: str, target_port: int, rate: float = 100e6) -> None:
        self.target = (target_host, target_port)
        self.rate = rate
        self.port = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.base_events.Server] = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, throttle: bool
    ) -> None:
        sent = 0
        start = time.monotonic()
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
                if throttle:
                    sent += len(data)
                    ahead = sent / self.rate - (time.monotonic() - start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(
            self._pipe(reader, up_writer, throttle=False),
            self._pipe(up_reader, writer, throttle=True),
        )

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        loop.run_until_complete(serve())
        loop.run_forever()
        loop.close()

    def __enter__(self) -> ThrottledRelay:
        self._thread = threading.Thread(target=self._run, name="throttled-relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the relay did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None:

            def stop() -> None:
                if self._server is not None:
                    self._server.close()
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.call_later(0.05, loop.stop)

            loop.call_soon_threadsafe(stop)
        if self._thread is not None:
            self._thread.join(10)
