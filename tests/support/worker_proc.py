"""A worker process for tests/test_worker.py: ``python worker_proc.py MODE STREAM DURABLE``.

The server URL comes from ``$NATS_URL``. Every line on stdout is one event, flushed at once:
``ready`` once the worker consumes (sigkill mode), ``got SEQ DELIVERED`` when the handler starts,
``done SEQ`` when it returns, ``exit`` just before the process ends normally.

Modes:

- ``sigkill``: the handler kills the process (SIGKILL) on every delivery, like a worker
  that crashes hard (out of memory, a segfault) whenever it touches a poison message.
- ``sigterm``: ``natsbus.run(worker, service)``; the handler takes 1.5 s, so a SIGTERM sent
  while it runs must let it finish. The service answers on ``$SERVICE_SUBJECT``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import natsbus


def say(line: str) -> None:
    print(line, flush=True)


async def sigkill(bus: natsbus.Bus, stream: str, durable: str) -> None:
    async def handle(msg: natsbus.Message) -> None:
        say(f"got {msg.seq} {msg.delivered}")
        os.kill(os.getpid(), signal.SIGKILL)

    async with bus.worker(stream, durable, handle):
        say("ready")
        await asyncio.Event().wait()  # until killed


async def sigterm(bus: natsbus.Bus, stream: str, durable: str) -> None:
    async def handle(msg: natsbus.Message) -> None:
        say(f"got {msg.seq} {msg.delivered}")
        await asyncio.sleep(1.5)
        say(f"done {msg.seq}")

    worker = bus.worker(stream, durable, handle)
    service = await bus.serve(os.environ["SERVICE_SUBJECT"], lambda msg: {"pong": True})
    # natsbus.run installs its signal handlers before the worker starts, so by the time a
    # handler prints "got", SIGTERM is handled.
    await natsbus.run(worker, service, grace=10.0)
    say(f"stopped {worker.state} handled={worker.handled}")


async def main() -> None:
    mode, stream, durable = sys.argv[1:4]
    async with natsbus.connect(os.environ["NATS_URL"], name=f"worker-proc-{mode}") as bus:
        await {"sigkill": sigkill, "sigterm": sigterm}[mode](bus, stream, durable)
    say("exit")


if __name__ == "__main__":
    asyncio.run(main())
