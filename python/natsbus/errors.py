"""The exceptions natsbus raises.

Every error derives from :class:`NatsbusError`, and many also from the
builtin a caller would catch anyway (``ConnectionError``, ``TimeoutError``,
``ValueError``, ``TypeError``). The Rust extension raises these classes
(it imports this module); nothing else defines them. All of them are also
importable from ``natsbus`` itself.
"""

from __future__ import annotations

import asyncio
import builtins
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ._natsbus import Plan, Problem, PubAck

__all__ = [
    "ApplyError",
    "AuthError",
    "BatchPublishError",
    "ClosedError",
    "ConnectError",
    "ConsumerNotFoundError",
    "DecodeError",
    "DriftError",
    "EncodeError",
    "ExpectationError",
    "InvalidArgumentError",
    "JetStreamError",
    "MessageNotFoundError",
    "NatsbusError",
    "NoRespondersError",
    "NoStreamError",
    "ServiceError",
    "StreamNotFoundError",
    "StreamUnavailableError",
    "TimeoutError",
    "TopologyError",
]


class NatsbusError(Exception):
    """Base class of every error natsbus raises.

    Raised as itself only for a bug inside natsbus (a panic in its Rust code):
    the message says "natsbus internal error" and where.
    """


class ConnectError(NatsbusError, ConnectionError):
    """No server could be reached, or the connection is gone for good."""


class AuthError(ConnectError):
    """The server rejected the credentials, or refused this user a subject.

    A permission violation names the subject and what was refused (publish,
    subscribe, use as a reply subject).
    """


if sys.version_info >= (3, 11):
    # asyncio.TimeoutError is the builtin TimeoutError from 3.11 on.
    class TimeoutError(NatsbusError, builtins.TimeoutError):
        """An operation did not finish in time.

        Also the builtin ``TimeoutError`` and ``asyncio.TimeoutError``.
        """

else:

    class TimeoutError(NatsbusError, builtins.TimeoutError, asyncio.TimeoutError):
        """An operation did not finish in time.

        Also the builtin ``TimeoutError`` and ``asyncio.TimeoutError``.
        """


class ClosedError(NatsbusError):
    """The bus or consumer was closed (or was inherited from a parent process by ``fork()``)."""


class InvalidArgumentError(NatsbusError, ValueError):
    """An argument is unusable (bad subject, bad name, negative timeout...)."""


class EncodeError(NatsbusError, TypeError):
    """An object could not be encoded as a payload."""


class DecodeError(NatsbusError, ValueError):
    """A payload did not decode (as JSON, or into the model).

    ``.subject`` and ``.seq`` name the message, when it came from a stream.
    """

    subject: Optional[str] = None
    seq: Optional[int] = None


class TopologyError(NatsbusError, ValueError):
    """A topology failed offline validation; ``.problems`` lists every problem."""

    problems: Sequence[Problem] = ()


class ApplyError(NatsbusError):
    """The server refused a change, or a change is blocked.

    ``.plan`` holds the plan; ``.err_code`` and ``.description`` are the
    server's when it refused.
    """

    plan: Optional[Plan] = None
    err_code: Optional[int] = None
    description: Optional[str] = None


class DriftError(NatsbusError):
    """The live server differs from the topology; ``.plan`` holds the differences."""

    plan: Optional[Plan] = None


class JetStreamError(NatsbusError):
    """The JetStream API answered with an error.

    ``.err_code`` and ``.description`` are the server's.
    """

    err_code: Optional[int] = None
    description: Optional[str] = None


class StreamNotFoundError(JetStreamError):
    """The stream does not exist."""


class ConsumerNotFoundError(JetStreamError):
    """The consumer does not exist."""


class MessageNotFoundError(JetStreamError):
    """The stream holds no message at that sequence (or for that subject)."""


class ExpectationError(JetStreamError):
    """A publish expectation failed (wrong last sequence, last msg id or stream)."""


class NoRespondersError(NatsbusError):
    """Nothing is listening on the subject of a request."""


class NoStreamError(NoRespondersError):
    """No stream captures the subject of a publish (add it to a stream in the topology)."""


class StreamUnavailableError(TimeoutError):
    """A stream captures the subject of a publish but could not store it in time.

    It had no leader (an election, a restart, a lame-duck hand-over) until
    the publish timeout; the publish was retried until then.
    """


class ServiceError(NatsbusError):
    """A service answered a request with an error (the ``Nats-Service-Error`` header).

    ``.code`` is the ``Nats-Service-Error-Code`` header as an int (500 when
    it is missing or not a number), ``.description`` the service's text,
    ``.reply`` the reply message itself.
    """

    def __init__(self, code: int, description: str, reply: object = None) -> None:
        super().__init__(f"service error {code}: {description}")
        self.code = code
        self.description = description
        self.reply = reply

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.code, self.description))


class BatchPublishError(NatsbusError):
    """Some messages of ``publish_many`` failed.

    ``.acks`` has a ``PubAck`` or ``None`` per input, ``.errors`` maps each
    failed input's index to its error.
    """

    acks: Sequence[Optional[PubAck]] = ()
    errors: Optional[dict[int, NatsbusError]] = None


# Users meet these as natsbus.<Name> (in tracebacks and reprs too).
for _name in __all__:
    globals()[_name].__module__ = "natsbus"
del _name
