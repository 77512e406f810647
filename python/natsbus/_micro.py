"""The NATS micro protocol for ``bus.serve()``: ``$SRV.PING``, ``$SRV.INFO``, ``$SRV.STATS``.

Every service answers the discovery requests of ``nats micro ls`` / ``nats micro info`` /
``nats micro stats`` (and nats.go's or nats-py's micro clients) on ``$SRV.<VERB>``,
``$SRV.<VERB>.<name>`` and ``$SRV.<VERB>.<name>.<id>``, with the
``io.nats.micro.v1.*_response`` documents of the protocol. A user the server does not let
subscribe to ``$SRV.>`` still gets a working service; discovery is then logged as off.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any, Optional

from .errors import ClosedError, InvalidArgumentError, NatsbusError

if TYPE_CHECKING:
    from ._bus import Bus
    from ._consumer import Service
    from ._natsbus import MessageSource

log = logging.getLogger("natsbus.service")

NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# Semantic versioning 2.0.0, as the micro protocol requires.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
VERBS = ("PING", "INFO", "STATS")


def default_name(subject: str) -> str:
    """A micro service name for ``subject``: its tokens joined by ``-``, wildcards dropped."""
    tokens = [t for t in subject.split(".") if t not in ("*", ">")]
    name = re.sub(r"[^A-Za-z0-9_-]", "_", "-".join(tokens))
    return name or "natsbus"


def check_identity(name: str, version: str, metadata: Optional[dict[str, str]]) -> None:
    if not NAME.match(name):
        raise InvalidArgumentError(
            f"service name {name!r}: use letters, digits, '-' and '_' only "
            "(the micro protocol's rule)"
        )
    if not SEMVER.match(version):
        raise InvalidArgumentError(
            f"service version {version!r} is not a semantic version (e.g. 1.0.0, 2.1.0-rc.1)"
        )
    if metadata is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InvalidArgumentError("service metadata must map text to text")


class Micro:
    """The discovery side of one ``Service``."""

    def __init__(
        self,
        service: Service,
        name: str,
        version: str,
        description: Optional[str],
        metadata: Optional[dict[str, str]],
    ) -> None:
        self.service = service
        self.name = name
        self.version = version
        self.description = description or ""
        self.metadata = dict(metadata or {})
        self.id = secrets.token_hex(11)
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self._sources: list[MessageSource] = []
        self._tasks: list[asyncio.Task[None]] = []

    def subjects(self) -> list[str]:
        out = []
        for verb in VERBS:
            out += [
                f"$SRV.{verb}",
                f"$SRV.{verb}.{self.name}",
                f"$SRV.{verb}.{self.name}.{self.id}",
            ]
        return out

    async def start(self, bus: Bus) -> None:
        try:
            for subject in self.subjects():
                self._sources.append(await bus._core.subscribe(subject, None))
        except NatsbusError as e:
            log.warning(
                "service %s: discovery ($SRV) is off, the requests still get answers: %s",
                self.name,
                e,
            )
            await self.stop()
            return
        loop = asyncio.get_running_loop()
        for subject, source in zip(self.subjects(), self._sources, strict=True):
            verb = subject.split(".")[1]
            self._tasks.append(loop.create_task(self._answer(bus, verb, source)))

    async def _answer(self, bus: Bus, verb: str, source: MessageSource) -> None:
        while True:
            try:
                msgs = source.take(64) or await source.wait(64)
            except ClosedError:
                return
            except NatsbusError as e:  # e.g. the server refused this subscription
                log.warning("service %s: discovery ($SRV.%s) stopped: %s", self.name, verb, e)
                return
            for msg in msgs:
                if msg.reply:
                    body = json.dumps(self.document(verb)).encode()
                    bus._core.respond(msg.reply, body)

    def _identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "version": self.version,
            "metadata": self.metadata,
        }

    def _endpoint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subject": self.service.subject,
            "queue_group": self.service.queue or "",
            "metadata": {},
        }

    def document(self, verb: str) -> dict[str, Any]:
        """The answer to ``$SRV.<verb>``."""
        if verb == "PING":
            return {"type": "io.nats.micro.v1.ping_response", **self._identity()}
        if verb == "INFO":
            return {
                "type": "io.nats.micro.v1.info_response",
                **self._identity(),
                "description": self.description,
                "endpoints": [self._endpoint()],
            }
        s = self.service
        requests = s.handled + s.failed
        endpoint = {
            **self._endpoint(),
            "num_requests": requests,
            "num_errors": s.failed,
            "last_error": s.last_error,
            "processing_time": s.processing_ns,
            "average_processing_time": s.processing_ns // requests if requests else 0,
            "data": None,
        }
        del endpoint["metadata"]
        started = self.started.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return {
            "type": "io.nats.micro.v1.stats_response",
            **self._identity(),
            "started": started,
            "endpoints": [endpoint],
        }

    async def stop(self) -> None:
        for source in self._sources:
            await source.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._sources.clear()
        self._tasks.clear()
