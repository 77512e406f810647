"""Type stubs for the natsbus Rust extension (checked by mypy.stubtest)."""

import asyncio
import os
from collections.abc import Awaitable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, Optional, TypeVar, Union, final

from typing_extensions import Self, disjoint_base

__all__ = [
    "BusCore",
    "Change",
    "PublishConn",
    "DrainCallback",
    "Health",
    "Message",
    "MessageSource",
    "Plan",
    "Problem",
    "PubAck",
    "PublishSetup",
    "Ready",
    "Topology",
    "__version__",
    "_decode",
    "_encode",
    "_panic_in_runtime",
    "connect",
    "parse_duration",
    "redact_url",
]

__version__: str

_Headers = Mapping[str, Union[str, Sequence[str]]]

# --- topology results ------------------------------------------------------
@final
class Problem:
    """One problem found while validating a topology. Unpacks like a tuple:
    ``file, line, field, message = problem``."""

    def __new__(
        cls, file: Optional[str], line: Optional[int], field: str, message: str
    ) -> Problem: ...
    @property
    def file(self) -> Optional[str]:
        """The file the topology came from, if any."""
    @property
    def line(self) -> Optional[int]:
        """1-based line, where known."""
    @property
    def field(self) -> str:
        """Dotted path of the field, e.g. ``streams.ORDERS.max_age``."""
    @property
    def message(self) -> str:
        """What is wrong and what to do about it."""
    def __len__(self) -> int: ...
    def __getitem__(self, key: int, /) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Change:
    """One stream or consumer in a plan and what applying would do to it."""

    def __new__(
        cls,
        action: str,
        stream: str,
        consumer: Optional[str] = None,
        diff: Optional[dict[str, tuple[Any, Any]]] = None,
        reason: Optional[str] = None,
        outcome: Optional[str] = None,
        error: Optional[str] = None,
    ) -> Change: ...
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Change:
        """A change from its ``to_dict()`` form."""
    @property
    def action(self) -> str: ...
    @property
    def stream(self) -> str: ...
    @property
    def consumer(self) -> Optional[str]: ...
    @property
    def diff(self) -> dict[str, tuple[Any, Any]]: ...
    @property
    def reason(self) -> Optional[str]: ...
    @property
    def outcome(self) -> Optional[str]:
        """After an apply: ``applied``, ``failed``, ``not_attempted`` or ``left_alone``."""
    @property
    def error(self) -> Optional[str]:
        """The server's error when ``outcome`` is ``failed``."""
    @property
    def target(self) -> str:
        """``stream STREAM`` or ``consumer STREAM/NAME``."""
    def to_dict(self) -> dict[str, Any]: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class Plan:
    """What applying a topology would do (or did)."""

    def __new__(cls, changes: Sequence[Change], text: Optional[str] = None) -> Plan: ...
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        """A plan from its ``to_dict()`` form."""
    @property
    def changes(self) -> list[Change]: ...
    @property
    def pending(self) -> bool:
        """True when applying would create, update or refuse something."""
    def by_action(self, action: str) -> list[Change]: ...
    def render(self, *, unmanaged: bool = False, changes_only: bool = False) -> str:
        """The readable plan, with every unmanaged resource named or only the changes."""
    def to_dict(self) -> dict[str, Any]: ...
    def __bool__(self) -> bool: ...

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

@final
class PublishSetup:
    """What a publish connection needs from its bus (``BusCore.publish_setup()``)."""

@disjoint_base
class PublishConn:
    """The loop-driven publish connection (an asyncio protocol); opened by
    ``natsbus._publish_conn``."""
    def __new__(cls, setup: PublishSetup) -> Self: ...
    def connection_made(self, transport: Any) -> None: ...
    def get_buffer(self, sizehint: int) -> bytearray: ...
    def buffer_updated(self, nbytes: int) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool: ...
    def connection_lost(self, exc: Optional[BaseException] = None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def info(self) -> asyncio.Future[bool]: ...
    def use_tls(self, tls_scheme: bool) -> bool: ...
    def set_transport(self, transport: Any) -> None: ...
    def handshake(self, tls: bool) -> asyncio.Future[None]: ...
    def lost(self) -> asyncio.Future[None]: ...
    def close(self) -> None: ...
    @property
    def ready(self) -> bool: ...
    @property
    def pending(self) -> int: ...
    @property
    def server_name(self) -> str: ...
    @property
    def connect_urls(self) -> list[str]: ...
    def flush_batched(self) -> None: ...
    def sweep(self, generation: int) -> None: ...

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
    def problems(self) -> list[str]: ...
    @property
    def ok(self) -> bool: ...
    def with_problems(self, problems: list[str]) -> Health: ...
    def to_dict(self) -> dict[str, Any]: ...

_T = TypeVar("_T")

@final
class Message(Generic[_T]):
    """A received message; payload kept as bytes, decoded lazily.

    ``Message[Task]`` is a message whose ``data`` is a ``Task`` (the
    ``model=`` of the reader that delivered it)."""
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
    def data(self) -> _T: ...
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
    @classmethod
    def __class_getitem__(cls, item: Any) -> Any: ...

@final
class Topology:
    """A validated topology: streams and their consumers."""
    @staticmethod
    def load(path: Union[str, os.PathLike[str]], *more: Union[str, os.PathLike[str]]) -> Topology:
        """Load one file, or merge several files and directories (``"-"``: stdin)."""
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

_TopologyArg = Union[
    Topology,
    Mapping[str, Any],
    str,
    os.PathLike[str],
    Sequence[Union[str, os.PathLike[str]]],
]

@final
class MessageSource:
    """A buffered source of messages (consumer, subscription or replay)."""
    def take(self, max: Optional[int] = None) -> list[Message[Any]]: ...
    def wait(
        self, max: Optional[int] = None, timeout: Optional[float] = None, min: int = 1
    ) -> Awaitable[list[Message[Any]]]: ...
    @property
    def buffered(self) -> int: ...
    @property
    def finished(self) -> bool: ...
    def keep_ahead(self, n: int) -> None: ...
    def release(self, msgs: Sequence[Message[Any]]) -> None: ...
    def close(self, release: Sequence[Message[Any]] = ...) -> Awaitable[None]: ...

@final
@final
class BusCore:
    """The Rust half of a ``natsbus.Bus`` (which holds it as ``_core``): the
    main connection and, by default, the loop-driven publish connection."""
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
        model: Any = None,
    ) -> Awaitable[Message[Any]]: ...
    def respond(self, reply: str, data: Any, *, headers: Optional[_Headers] = None) -> None: ...
    def open_consumer(
        self,
        stream: str,
        durable: str,
        *,
        model: Any = None,
        batch: int = 500,
        max_bytes: int = 8388608,
        heartbeat: float = 5.0,
        expires: float = 30.0,
        held: Any = None,
    ) -> Awaitable[MessageSource]: ...
    def subscribe(
        self,
        subject: str,
        queue: Optional[str] = None,
        capacity: int = 1024,
        *,
        model: Any = None,
    ) -> Awaitable[MessageSource]: ...
    def open_replay(
        self,
        stream: str,
        *,
        start_seq: Optional[int] = None,
        start_time: Optional[str] = None,
        last_per_subject: bool = False,
        subjects: Optional[Sequence[str]] = None,
        follow: bool = False,
        model: Any = None,
        heartbeat: float = 2.0,
    ) -> Awaitable[MessageSource]: ...
    def get_message(
        self,
        stream: str,
        seq: Optional[int] = None,
        last_for_subject: Optional[str] = None,
        *,
        model: Any = None,
    ) -> Awaitable[Message[Any]]: ...
    def publish_core(
        self, subject: str, data: Any, *, headers: Optional[_Headers] = None
    ) -> None: ...
    def attach_publish_connection(self, conn: Optional[PublishConn]) -> None: ...
    def keep_publish_task(self, task: asyncio.Task[None]) -> None: ...
    @property
    def publish_connection(self) -> Optional[PublishConn]: ...
    def publish_connection_plan(
        self,
    ) -> tuple[
        list[tuple[str, int, bool]],
        Optional[tuple[Optional[str], Optional[str], Optional[str], bool]],
        float,
    ]: ...
    def check_open(self, *names: Optional[str]) -> None: ...
    def publish_setup(self) -> PublishSetup: ...
    def jetstream_api(
        self, subject: str, body: Any = None, *, timeout: float = 5.0
    ) -> Awaitable[dict[str, Any]]: ...
    def stream_info(self, stream: str) -> Awaitable[dict[str, Any]]: ...
    def consumer_info(self, stream: str, durable: str) -> Awaitable[dict[str, Any]]: ...
    def set_topology(self, topology: _TopologyArg, *, heal: bool = True) -> None: ...
    @property
    def heals(self) -> bool: ...
    def next_event(self) -> Awaitable[tuple[str, str, float, str]]: ...
    @property
    def topology(self) -> Optional[Topology]: ...
    def plan(
        self, topology: Optional[_TopologyArg] = None, *, allow_destructive: bool = False
    ) -> Awaitable[Plan]: ...
    def ensure_streams(
        self,
        topology: Optional[_TopologyArg] = None,
        *,
        allow_destructive: bool = False,
        create_only: bool = False,
    ) -> Awaitable[Plan]: ...
    def verify(self, topology: Optional[_TopologyArg] = None) -> Awaitable[Plan]: ...
    def export(self, streams: Optional[Sequence[str]] = None) -> Awaitable[dict[str, Any]]: ...
    def export_yaml(self, streams: Optional[Sequence[str]] = None) -> Awaitable[str]: ...
    def status(self, streams: Optional[Sequence[str]] = None) -> Awaitable[dict[str, Any]]: ...
    def health(self, timeout: float = 2.0) -> Awaitable[Health]: ...
    def flush(self) -> Awaitable[None]: ...
    def close(self) -> Awaitable[None]: ...
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
    inbox_prefix: Optional[str] = None,
    domain: Optional[str] = None,
) -> Awaitable[BusCore]: ...
def _encode(obj: Any) -> tuple[bytes, bool]:
    """The publish encoder: (payload, is_json)."""

def _decode(payload: bytes) -> Any:
    """The JSON decoder behind ``Message.data``."""

def _panic_in_runtime(bus: BusCore, message: str) -> Awaitable[None]:
    """For tests: work on the runtime that panics with ``message``."""

def parse_duration(text: str) -> float:
    """Seconds in a duration with units, as a topology file writes them
    (``500ms``, ``30s``, ``2m``, ``1h30m``, ``7d``, ``1w``)."""

def redact_url(url: str) -> str:
    """``url`` (or a comma-separated list) with passwords and tokens as ``***``."""
