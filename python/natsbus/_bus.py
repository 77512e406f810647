"""``natsbus.Bus``: what users do with a connection, on top of the Rust core handle."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Optional, Union

from ._consumer import Consumer, Service, start_service

if TYPE_CHECKING:
    import os

    from ._natsbus import BusCore, Health, Message, Plan, PubAck, Topology

    _Headers = Mapping[str, Union[str, Sequence[str]]]
    _TopologyArg = Union[Topology, Mapping[str, Any], str, os.PathLike[str]]

__all__ = ["Bus"]


class Bus:
    """The connections to NATS, and everything an agent does with them.

    Create it with ``bus = await natsbus.connect(...)`` or
    ``async with natsbus.connect(...) as bus:``. A bus holds the main
    connection and, unless ``connect(direct_publish=False)``, a second one
    that ``publish()`` uses, driven by the asyncio loop itself (see the
    README). Every method that talks to the server returns an awaitable
    created on the loop that connected the bus.
    """

    __slots__ = ("__weakref__", "_core")

    def __init__(self, core: BusCore) -> None:
        self._core = core

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
        """
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
        Cancelling it stops sending what was not sent yet.
        """
        return self._core.publish_many(items, window=window, timeout=timeout)

    def request(
        self,
        subject: str,
        data: Any = None,
        *,
        headers: Optional[_Headers] = None,
        timeout: float = 5.0,
    ) -> Awaitable[Message]:
        """Send a core NATS request and return the reply ``Message``.

        Nobody listening raises ``NoRespondersError`` at once.
        """
        return self._core.request(subject, data, headers=headers, timeout=timeout)

    # -- consuming and serving -----------------------------------------------------------------

    def consume(
        self,
        stream: str,
        durable: str,
        *,
        model: Any = None,
        batch: int = 500,
        max_bytes: int = 8388608,
    ) -> Consumer:
        """Iterate a durable pull consumer: ``async with bus.consume(stream, durable) as msgs``.

        ``model`` decodes ``msg.data`` (a pydantic model, dataclass or
        callable). The prefetch adapts to how fast messages are taken: pull
        requests ask for at most ``batch`` messages, and at most two batches
        (no more than the consumer's ``max_ack_pending``) and ``max_bytes``
        bytes are held.
        """
        self._core.check_open(stream, durable)
        return Consumer(self, stream, durable, model, batch, max_bytes)

    def serve(
        self,
        subject: str,
        handler: Callable[[Message], Any],
        *,
        queue: Optional[str] = None,
        max_concurrency: int = 100,
    ) -> Awaitable[Service]:
        """Answer requests on ``subject`` with ``handler(msg)``; returns a running ``Service``.

        The handler may be sync or async; its return value is encoded like
        ``publish``. With ``queue``, instances share the requests.
        """
        self._core.check_open(subject, queue)
        return start_service(self, subject, handler, queue, max_concurrency)

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

    def plan(
        self, topology: Optional[_TopologyArg] = None, *, allow_destructive: bool = False
    ) -> Awaitable[Plan]:
        """What applying ``topology`` (default: the bus's) would do. Changes nothing."""
        return self._core.plan(topology, allow_destructive=allow_destructive)

    def ensure_streams(
        self, topology: Optional[_TopologyArg] = None, *, allow_destructive: bool = False
    ) -> Awaitable[Plan]:
        """Create and update streams and consumers to match ``topology``; never deletes.

        A blocked change, or a destructive one without ``allow_destructive``,
        raises ``ApplyError`` before anything is changed. Returns the executed plan.
        """
        return self._core.ensure_streams(topology, allow_destructive=allow_destructive)

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

    def health(self, timeout: float = 2.0) -> Awaitable[Health]:
        """A ``Health`` snapshot: connection, round trip, JetStream, account usage."""
        return self._core.health(timeout)

    def flush(self) -> Awaitable[None]:
        """Wait until everything queued (acks, replies) has reached the server."""
        return self._core.flush()

    def close(self) -> Awaitable[None]:
        """Close the bus: close its consumers and services, settle every queued ack, drain.

        Later calls wait for the same close. Acks after it raise ``ClosedError``.
        """
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
