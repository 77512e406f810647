"""OpenTelemetry helpers for messages you iterate yourself (``pip install "natsbus[otel]"``).

Workers and ``serve`` run each handler in a span of their own; for
``consume()``, ``replay()`` and ``subscribe()`` iteration, where natsbus does not
know where the handling of a message ends, wrap it::

    async for msg in consumer:
        with natsbus.otel.span(msg):
            await handle(msg.data)
        await msg.ack()

Both helpers work, doing nothing, when OpenTelemetry is not installed.
See the README, "Tracing (OpenTelemetry)".
"""

from __future__ import annotations

from ._otel import extract, span

__all__ = ["extract", "span"]
