"""natsbus: NATS JetStream for Python services, with a Rust core.

Declarative streams, typed publish and durable consumers::

    import natsbus

    async with natsbus.connect("nats://127.0.0.1:4222") as bus:
        ack = await bus.publish("orders.created", {"id": 1})
        async with bus.consume("ORDERS", "worker") as orders:
            async for msg in orders:
                print(msg.data)
                await msg.ack()

See the README for the topology file, the CLI and the full API.
"""

from __future__ import annotations

from ._bus import Bus
from ._check import Check, CheckReport
from ._connect import TLS, Connecting, connect
from ._consumer import Consumer, Service
from ._dead_letters import DeadLetter
from ._events import Event
from ._natsbus import (
    Change,
    Health,
    Message,
    Plan,
    Problem,
    PubAck,
    Topology,
    __version__,
)
from ._probes import Probes
from ._readers import Replay, Subscription
from ._worker import Reject, Worker, run
from .errors import (
    ApplyError,
    AuthError,
    BatchPublishError,
    ClosedError,
    ConnectError,
    ConsumerNotFoundError,
    DecodeError,
    DriftError,
    EncodeError,
    ExpectationError,
    InvalidArgumentError,
    JetStreamError,
    MessageNotFoundError,
    NatsbusError,
    NoRespondersError,
    NoStreamError,
    ServiceError,
    StreamNotFoundError,
    StreamUnavailableError,
    TimeoutError,
    TopologyError,
)

__all__ = [
    "TLS",
    "ApplyError",
    "AuthError",
    "BatchPublishError",
    "Bus",
    "Change",
    "Check",
    "CheckReport",
    "ClosedError",
    "ConnectError",
    "Connecting",
    "Consumer",
    "ConsumerNotFoundError",
    "DeadLetter",
    "DecodeError",
    "DriftError",
    "EncodeError",
    "ExpectationError",
    "Health",
    "InvalidArgumentError",
    "JetStreamError",
    "Message",
    "MessageNotFoundError",
    "NatsbusError",
    "NoRespondersError",
    "NoStreamError",
    "Plan",
    "Probes",
    "Problem",
    "PubAck",
    "Reject",
    "Replay",
    "Service",
    "ServiceError",
    "StreamNotFoundError",
    "StreamUnavailableError",
    "Subscription",
    "TimeoutError",
    "Topology",
    "TopologyError",
    "Worker",
    "Event",
    "__version__",
    "connect",
    "run",
]
