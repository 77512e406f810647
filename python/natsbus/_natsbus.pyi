"""Type stubs for the natsbus Rust extension (checked by mypy.stubtest)."""

import builtins
import os
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, Optional, Union, final

from ._consumer import Consumer, Service
from ._types import Plan, Problem

__all__ = [
    "ApplyError",
    "AuthError",
    "BatchPublishError",
    "Bus",
    "ClosedError",
    "ConnectError",
    "ConsumerNotFoundError",
    "DecodeError",
    "DrainCallback",
    "DriftError",
    "EncodeError",
    "ExpectationError",
    "Health",
    "InvalidArgumentError",
    "JetStreamError",
    "Message",
    "MessageSource",
    "NatsbusError",
    "NoRespondersError",
    "NoStreamError",
    "PubAck",
    "Ready",
    "StreamNotFoundError",
    "TimeoutError",
    "Topology",
    "TopologyError",
    "__version__",
    "_decode",
    "_encode",
    "connect",
]

__version__: str

_Headers = Mapping[str, Union[str, Sequence[str]]]

# --- errors (one table in src/errors.rs) ---------------------------------
class NatsbusError(Exception): ...
class ConnectError(NatsbusError, ConnectionError): ...
class AuthError(ConnectError): ...
class TimeoutError(NatsbusError, builtins.TimeoutError): ...
class ClosedError(NatsbusError): ...
class InvalidArgumentError(NatsbusError, ValueError): ...
class EncodeError(NatsbusError, TypeError): ...

class DecodeError(NatsbusError, ValueError):
    subject: Optional[str]
    seq: Optional[int]

class TopologyError(NatsbusError, ValueError):
    problems: Sequence[Problem]

class ApplyError(NatsbusError):
    plan: Optional[Plan]
    err_code: Optional[int]
    description: Optional[str]

class DriftError(NatsbusError):
    plan: Optional[Plan]

class JetStreamError(NatsbusError):
    err_code: Optional[int]
    description: Optional[str]

class StreamNotFoundError(JetStreamError): ...
class ConsumerNotFoundError(JetStreamError): ...
class ExpectationError(JetStreamError): ...
class NoRespondersError(NatsbusError): ...
class NoStreamError(NoRespondersError): ...

class BatchPublishError(NatsbusError):
    acks: Sequence[Optional[PubAck]]
    errors: Optional[dict[int, NatsbusError]]

# --- awaitables ---------------------------------------------------------
@final
class Ready:
    """An awaitable that is already finished (queued acks)."""
    def __await__(self) -> Generator[Any]: ...
    def __iter__(self) -> Ready: ...
    def __next__(self) -> None: ...

@final
class DrainCallback:
    def __call__(self, *args: Any, **kwargs: Any) -> None: ...

# --- data ---------------------------------------------------------------
@final
class PubAck:
    """The server's acknowledgement of a stored message."""
    @property
    def stream(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def duplicate(self) -> bool: ...
    @property
    def domain(self) -> Optional[str]: ...
    def __new__(
        cls, stream: str, seq: int, duplicate: bool = False, domain: Optional[str] = None
    ) -> PubAck: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...

@final
class Health:
    """A snapshot of the connection's health."""
    @property
    def connected(self) -> bool: ...
    @property
    def server_version(self) -> str: ...
    @property
    def server_name(self) -> str: ...
    @property
    def rtt(self) -> Optional[float]: ...
    @property
    def jetstream(self) -> bool: ...
    @property
    def streams(self) -> Optional[int]: ...
    @property
    def consumers(self) -> Optional[int]: ...
    @property
    def memory(self) -> Optional[int]: ...
    @property
    def storage(self) -> Optional[int]: ...
    @property
    def error(self) -> Optional[str]: ...
    @property
    def ok(self) -> bool: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Message:
    """A received message; payload kept as bytes, decoded lazily."""
    @property
    def subject(self) -> str: ...
    @property
    def reply(self) -> Optional[str]: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def headers_all(self) -> dict[str, list[str]]: ...
    @property
    def data(self) -> Any: ...
    @property
    def stream(self) -> Optional[str]: ...
    @property
    def consumer(self) -> Optional[str]: ...
    @property
    def seq(self) -> int: ...
    @property
    def consumer_seq(self) -> int: ...
    @property
    def delivered(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def timestamp(self) -> Optional[float]: ...
    def ack(self) -> Ready: ...
    def nak(self, delay: Optional[float] = None) -> Ready: ...
    def term(self, reason: Optional[str] = None) -> Ready: ...
    def in_progress(self) -> Ready: ...
    def ack_sync(self, timeout: float = 5.0) -> Awaitable[None]: ...

@final
class Topology:
    """A validated topology: streams and their consumers."""
    @staticmethod
    def load(path: Union[str, os.PathLike[str]]) -> Topology: ...
    @staticmethod
    def from_dict(data: Mapping[str, Any], source: Optional[str] = None) -> Topology: ...
    @staticmethod
    def from_text(text: str, format: str = "yaml", source: Optional[str] = None) -> Topology: ...
    def to_dict(self) -> dict[str, Any]: ...
    @property
    def streams(self) -> list[str]: ...
    @property
    def consumers(self) -> list[tuple[str, str]]: ...
    @property
    def source(self) -> Optional[str]: ...

_TopologyArg = Union[Topology, Mapping[str, Any], str, os.PathLike[str]]

@final
class MessageSource:
    """A buffered source of messages (consumer or subscription)."""
    def take(self, max: int) -> list[Message]: ...
    def wait(
        self, max: int, timeout: Optional[float] = None, min: int = 1
    ) -> Awaitable[list[Message]]: ...
    @property
    def buffered(self) -> int: ...
    def close(self, release: Sequence[Message] = ...) -> Awaitable[None]: ...

@final
class Bus:
    """One connection to NATS. Create it with ``natsbus.connect()``."""
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
    ) -> Awaitable[PubAck]: ...
    def publish_many(
        self,
        items: Iterable[Union[tuple[str, Any], tuple[str, Any, Optional[_Headers]]]],
        *,
        window: int = 1024,
        timeout: Optional[float] = None,
    ) -> Awaitable[list[PubAck]]: ...
    def request(
        self,
        subject: str,
        data: Any = None,
        *,
        headers: Optional[_Headers] = None,
        timeout: float = 5.0,
    ) -> Awaitable[Message]: ...
    def _respond(self, reply: str, data: Any, *, headers: Optional[_Headers] = None) -> None: ...
    def consume(
        self, stream: str, durable: str, *, model: Any = None, batch: int = 500
    ) -> Consumer: ...
    def serve(
        self,
        subject: str,
        handler: Callable[[Message], Any],
        *,
        queue: Optional[str] = None,
        max_concurrency: int = 100,
    ) -> Awaitable[Service]: ...
    def _consume(
        self,
        stream: str,
        durable: str,
        *,
        model: Any = None,
        batch: int = 500,
        heartbeat: float = 5.0,
        expires: float = 30.0,
    ) -> Awaitable[MessageSource]: ...
    def _subscribe(
        self, subject: str, queue: Optional[str] = None, capacity: int = 1024
    ) -> Awaitable[MessageSource]: ...
    def jetstream_api(
        self, subject: str, body: Any = None, *, timeout: float = 5.0
    ) -> Awaitable[dict[str, Any]]: ...
    def stream_info(self, stream: str) -> Awaitable[dict[str, Any]]: ...
    def consumer_info(self, stream: str, durable: str) -> Awaitable[dict[str, Any]]: ...
    def _set_topology(self, topology: _TopologyArg) -> None: ...
    @property
    def topology(self) -> Optional[Topology]: ...
    def plan(
        self, topology: Optional[_TopologyArg] = None, *, allow_destructive: bool = False
    ) -> Awaitable[Plan]: ...
    def ensure_streams(
        self, topology: Optional[_TopologyArg] = None, *, allow_destructive: bool = False
    ) -> Awaitable[Plan]: ...
    def verify(self, topology: Optional[_TopologyArg] = None) -> Awaitable[Plan]: ...
    def export(self, streams: Optional[Sequence[str]] = None) -> Awaitable[dict[str, Any]]: ...
    def export_yaml(self, streams: Optional[Sequence[str]] = None) -> Awaitable[str]: ...
    def status(self, streams: Optional[Sequence[str]] = None) -> Awaitable[dict[str, Any]]: ...
    def health(self, timeout: float = 2.0) -> Awaitable[Health]: ...
    def flush(self) -> Awaitable[None]: ...
    def close(self) -> Awaitable[None]: ...
    def __aenter__(self) -> Awaitable[Bus]: ...
    def __aexit__(
        self, exc_type: Optional[Any], exc: Optional[Any], tb: Optional[Any], /
    ) -> Awaitable[None]: ...
    @property
    def closed(self) -> bool: ...
    @property
    def connected(self) -> bool: ...
    @property
    def servers(self) -> str: ...
    @property
    def name(self) -> Optional[str]: ...
    @property
    def server_version(self) -> str: ...

def connect(
    servers: list[str],
    *,
    user: Optional[str] = None,
    password: Optional[str] = None,
    token: Optional[str] = None,
    nkey_seed: Optional[str] = None,
    creds: Optional[Union[str, os.PathLike[str]]] = None,
    tls_ca: Optional[Union[str, os.PathLike[str]]] = None,
    tls_cert: Optional[Union[str, os.PathLike[str]]] = None,
    tls_key: Optional[Union[str, os.PathLike[str]]] = None,
    tls_handshake_first: bool = False,
    tls: bool = False,
    name: Optional[str] = None,
    connect_timeout: float = 5.0,
    max_reconnects: Optional[int] = None,
) -> Awaitable[Bus]: ...
def _encode(obj: Any) -> tuple[bytes, bool]:
    """The publish encoder: (payload, is_json)."""

def _decode(payload: bytes) -> Any:
    """The JSON decoder behind ``Message.data``."""
