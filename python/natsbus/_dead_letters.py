"""Dead letters: list what workers gave up on, and re-drive it.

A worker of a consumer that declares ``dead_letter: <subject>`` publishes
each message it gives up on there, with ``Natsbus-Dead-Letter-*`` headers
saying where it came from (see ``_worker.py``). This module reads a
dead-letter stream back (``bus.dead_letters``) and sends its messages to
their original subjects again (``bus.redrive``), removing them from the
dead-letter stream once the original stream has stored them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from ._worker import DL_HEADERS
from .errors import InvalidArgumentError, MessageNotFoundError

if TYPE_CHECKING:
    from ._bus import Bus
    from ._natsbus import Message

__all__ = ["DeadLetter", "list_dead_letters", "redrive", "select"]

log = logging.getLogger("natsbus.dead_letters")

_STREAM, _CONSUMER, _SUBJECT, _SEQUENCE, _DELIVERED, _REASON = DL_HEADERS
_DL_LOWER = frozenset(h.lower() for h in DL_HEADERS)


def _int(text: Optional[str]) -> Optional[int]:
    return int(text) if text is not None and text.strip().isdigit() else None


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One message of a dead-letter stream, and where it came from.

    ``seq`` is its sequence in the dead-letter stream; ``stream``,
    ``consumer``, ``subject``, ``sequence`` and ``delivered`` say where the
    worker that gave up on it read it (None when the message carries no
    ``Natsbus-Dead-Letter-*`` headers: it was not put there by a worker);
    ``reason`` is why. ``message`` is the stored message itself (payload
    and every header).
    """

    seq: int
    stream: Optional[str]
    consumer: Optional[str]
    subject: Optional[str]
    sequence: Optional[int]
    delivered: Optional[int]
    reason: Optional[str]
    timestamp: Optional[float]
    message: Message[Any] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def of(cls, msg: Message[Any]) -> DeadLetter:
        h = msg.headers
        return cls(
            seq=msg.seq,
            stream=h.get(_STREAM),
            consumer=h.get(_CONSUMER),
            subject=h.get(_SUBJECT),
            sequence=_int(h.get(_SEQUENCE)),
            delivered=_int(h.get(_DELIVERED)),
            reason=h.get(_REASON),
            timestamp=msg.timestamp,
            message=msg,
        )

    @property
    def redrivable(self) -> bool:
        """True when it says which subject it came from."""
        return bool(self.subject)

    def original_headers(self) -> dict[str, list[str]]:
        """Its headers without the ``Natsbus-Dead-Letter-*`` ones (and without
        the ``Nats-Msg-Id`` the dead-letter copy was stored under)."""
        return {
            k: v
            for k, v in self.message.headers_all.items()
            if k.lower() not in _DL_LOWER and k.lower() != "nats-msg-id"
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything but the payload, for ``--json``."""
        d: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "message"
        }
        d["dead_letter_subject"] = self.message.subject
        d["bytes"] = len(self.message.payload)
        return d


async def list_dead_letters(
    bus: Bus, stream: str, *, limit: Optional[int] = None
) -> list[DeadLetter]:
    """The messages of dead-letter ``stream`` in order (at most ``limit``)."""
    if limit is not None and limit < 1:
        raise InvalidArgumentError("limit must be at least 1")
    out: list[DeadLetter] = []
    async with bus.replay(stream) as messages:
        async for msg in messages:
            out.append(DeadLetter.of(msg))
            if limit is not None and len(out) >= limit:
                break
    return out


def select(
    stream: str, letters: list[DeadLetter], seqs: Optional[Iterable[int]]
) -> list[DeadLetter]:
    """The ``letters`` at ``seqs`` (all when None); ``MessageNotFoundError``
    naming the sequences ``stream`` does not hold."""
    if seqs is None:
        return letters
    wanted = set(seqs)
    missing = wanted - {d.seq for d in letters}
    if missing:
        raise MessageNotFoundError(
            f"stream {stream!r} holds no message at sequence(s) "
            + ", ".join(str(s) for s in sorted(missing))
        )
    return [d for d in letters if d.seq in wanted]


async def redrive(
    bus: Bus, stream: str, *, seqs: Optional[Iterable[int]] = None
) -> list[DeadLetter]:
    """Publish the dead letters of ``stream`` (all, or those at ``seqs``) to
    their original subjects again and remove each from ``stream`` once the
    original stream has stored it. Returns the ones re-driven.

    Each re-drive is published with msg id ``natsbus-redrive:<stream>:<seq>``,
    so running it again after an interruption does not store a message twice
    within the original stream's duplicate window. A dead letter that does not
    say where it came from is left alone (and logged).
    """
    letters = select(stream, await list_dead_letters(bus, stream), seqs)
    done: list[DeadLetter] = []
    for d in letters:
        if not d.redrivable:
            log.warning(
                "%s seq %d has no %s header: not a dead letter natsbus wrote; left alone",
                stream,
                d.seq,
                _SUBJECT,
            )
            continue
        assert d.subject is not None
        await bus.publish(
            d.subject,
            d.message.payload,
            headers=d.original_headers(),
            msg_id=f"natsbus-redrive:{stream}:{d.seq}",
        )
        # Removed meanwhile (another re-drive): nothing left to do.
        with contextlib.suppress(MessageNotFoundError):
            await bus.jetstream_api(f"STREAM.MSG.DELETE.{stream}", {"seq": d.seq})
        done.append(d)
    return done
