"""Checks an operator can alert on: ``bus.check()``, ``natsbus check`` and ``/readyz``.

What is read (all JetStream API calls, one stream's calls concurrent with the others'):
the connection (``health``), each stream's info (replicas, leader, lag) and its
consumers' infos (pending, ack pending, redelivered, waiting pulls, last activity).
Each measure becomes one ``Check`` graded against a threshold; the report's status
is the worst grade, with the exit codes of the Nagios convention that
``nats server check`` follows (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

The topology-aware part of ``bus.health()`` lives here too (``topology_problems``):
the same stream facts, as one line per problem.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import math
import re
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Optional, TypeVar, Union

from . import _natsbus
from .errors import (
    ConsumerNotFoundError,
    InvalidArgumentError,
    NatsbusError,
    StreamNotFoundError,
)

if TYPE_CHECKING:
    from ._bus import Bus
    from ._natsbus import Health

__all__ = ["Check", "CheckReport", "CheckStatus", "health_with_topology", "run_check"]

CheckStatus = Literal["ok", "warning", "critical", "unknown"]
"""The grade of one check or of a whole report."""

Duration = Union[float, int, str]
"""Seconds, or a duration with units as a topology file writes them (``"5m"``, ``"1h30m"``)."""

EXIT_CODES: Mapping[str, int] = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}

# The worst grade wins. Not knowing part of the state (UNKNOWN) is worse than a known
# WARNING (it may hide anything), and better than a known CRITICAL.
_SEVERITY: Mapping[str, int] = {"ok": 0, "warning": 1, "unknown": 2, "critical": 3}

# Threshold settings: the names of the keyword arguments, of the CLI options
# (--lag-warn...) and of the per-consumer topology settings (kept on the server in the
# consumer's metadata as "natsbus.<name>").
COUNT_SETTINGS = ("lag_warn", "lag_crit", "ack_pending_warn", "ack_pending_crit")
DURATION_SETTINGS = ("inactive_warn", "inactive_crit")
SETTINGS = COUNT_SETTINGS + DURATION_SETTINGS
METADATA_PREFIX = "natsbus."

# At most this many streams are read at once (a server may hold thousands).
_CONCURRENCY = 16

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Check:
    """One measure of one target, graded.

    ``name`` says what was measured (``connection``, ``stream``, ``leader``,
    ``replicas``, ``consumer``, ``lag``, ``ack_pending``, ``redelivered``,
    ``waiting``, ``inactive``); ``target`` what it was measured on
    (``connection``, ``stream ORDERS``, ``consumer ORDERS > billing``);
    ``value`` the measured value (a count, or seconds for ``inactive`` and the
    round trip), ``warn``/``crit`` the thresholds it was held to, if any.
    """

    name: str
    target: str
    status: CheckStatus
    message: str
    value: Optional[float] = None
    warn: Optional[float] = None
    crit: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return f"{self.status.upper()} {self.target}: {self.message}"


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """The result of ``bus.check()``: every ``Check`` and the worst grade.

    ``status`` is ``"ok"``, ``"warning"``, ``"critical"`` or ``"unknown"``;
    ``exit_code`` the matching Nagios exit code (0, 1, 2, 3); ``problems`` the
    checks that are not OK, worst first. ``str(report)`` is Nagios plugin text:
    ``OK: ...`` (or ``CRITICAL: ...``) first, then one line per problem and one
    per target that passed, then the performance data after ``|``.
    """

    checks: tuple[Check, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", tuple(self.checks))

    @property
    def status(self) -> CheckStatus:
        worst: CheckStatus = "ok"
        for check in self.checks:
            if _SEVERITY[check.status] > _SEVERITY[worst]:
                worst = check.status
        return worst

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def problems(self) -> list[Check]:
        bad = [c for c in self.checks if c.status != "ok"]
        return sorted(bad, key=lambda c: -_SEVERITY[c.status])

    @property
    def summary(self) -> str:
        """The first line of ``str(report)``."""
        problems = self.problems
        if not problems:
            streams = {c.target for c in self.checks if c.target.startswith("stream ")}
            consumers = {c.target for c in self.checks if c.target.startswith("consumer ")}
            return (
                f"OK: {_plural(len(streams), 'stream')}, "
                f"{_plural(len(consumers), 'consumer')} checked"
            )
        shown = "; ".join(f"{c.target}: {c.message}" for c in problems[:3])
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return f"{self.status.upper()}: {shown}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "checks": [c.to_dict() for c in self.checks],
        }

    def __str__(self) -> str:
        lines = [self.summary]
        lines += [str(c) for c in self.problems]
        passed: dict[str, list[str]] = {}
        for check in self.checks:
            if check.status == "ok":
                passed.setdefault(check.target, []).append(check.message)
        bad_targets = {c.target for c in self.problems}
        for target, messages in passed.items():
            label = "OK" if target not in bad_targets else "ok"
            lines.append(f"{label} {target}: {', '.join(messages)}")
        perf = " ".join(_perfdata(c) for c in self.checks if _perfdata(c))
        if perf:
            lines.append(f"| {perf}")
        return "\n".join(lines)


# -- thresholds ------------------------------------------------------------------------------


def parse_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidArgumentError(f"{name} must be a count (an int >= 0), got {value!r}")
    try:
        count = int(value)
    except ValueError:
        raise InvalidArgumentError(f"{name} must be a count (an int >= 0), got {value!r}") from None
    if count < 0:
        raise InvalidArgumentError(f"{name} must be a count (an int >= 0), got {value!r}")
    return count


def parse_seconds(name: str, value: Any) -> float:
    """Seconds from a number of seconds or a duration text like ``"5m"`` / ``"1h30m"``."""
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be seconds or a duration like '5m', not {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = _natsbus.parse_duration(value.strip())
            except InvalidArgumentError:
                raise InvalidArgumentError(
                    f"{name}: {value!r} is not a duration (use seconds or 500ms, 30s, 5m, 1h, 1d)"
                ) from None
    else:
        raise InvalidArgumentError(f"{name} must be seconds or a duration like '5m', not {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgumentError(f"{name} must be a finite, non-negative duration, got {value!r}")
    return seconds


def parse_setting(name: str, value: Any) -> float:
    return parse_count(name, value) if name in COUNT_SETTINGS else parse_seconds(name, value)


def parse_options(options: Mapping[str, Any]) -> dict[str, float]:
    """The thresholds given as keyword arguments / CLI options (``None`` = not given)."""
    return {k: parse_setting(k, v) for k, v in options.items() if v is not None}


def declared_settings(consumer: Mapping[str, Any]) -> dict[str, Any]:
    """The raw threshold settings of a consumer: a topology entry (top-level keys or its
    ``metadata``) or a live consumer config (``metadata`` only)."""
    metadata = consumer.get("metadata") or {}
    found: dict[str, Any] = {}
    for key in SETTINGS:
        if consumer.get(key) is not None:
            found[key] = consumer[key]
        elif metadata.get(METADATA_PREFIX + key) is not None:
            found[key] = metadata[METADATA_PREFIX + key]
    return found


# -- reading the server ----------------------------------------------------------------------


async def _api(bus: Bus, subject: str, body: Any, timeout: float) -> dict[str, Any]:
    return await bus.jetstream_api(subject, body, timeout=timeout)


async def _paged(bus: Bus, subject: str, key: str, timeout: float) -> list[Any]:
    """Every item of a paged list answer (``STREAM.NAMES``, ``CONSUMER.LIST.<s>``...)."""
    items: list[Any] = []
    while True:
        page = await _api(bus, subject, {"offset": len(items)}, timeout)
        got = page.get(key) or []
        items.extend(got)
        if not got or len(items) >= int(page.get("total") or 0):
            return items


async def _limited(sem: asyncio.Semaphore, work: Awaitable[_T]) -> _T:
    async with sem:
        return await work


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"no answer within {timeout:g}s"
    return str(exc) or type(exc).__name__


# -- what a stream's info says ---------------------------------------------------------------


def replica_problems(cluster: Mapping[str, Any]) -> list[str]:
    """``replica n3 is offline (lag 14)`` for every replica that is offline or not current."""
    problems = []
    for replica in cluster.get("replicas") or []:
        name = replica.get("name", "?")
        lag = int(replica.get("lag") or 0)
        behind = f" (lag {lag})" if lag else ""
        if replica.get("offline"):
            problems.append(f"replica {name} is offline{behind}")
        elif not replica.get("current"):
            problems.append(f"replica {name} is not current{behind}")
    return problems


def _replicas_of(config: Mapping[str, Any]) -> int:
    return int(config.get("num_replicas") or 1)


def _leader_checks(target: str, replicas: int, cluster: Mapping[str, Any]) -> list[Check]:
    """A replicated stream or consumer needs a leader; its replicas should be current."""
    leader = cluster.get("leader")
    if not leader:
        return [
            Check(
                "leader",
                target,
                "critical",
                f"R{replicas} without a leader: it can neither store nor deliver",
            )
        ]
    checks = [Check("leader", target, "ok", f"R{replicas}, leader {leader}")]
    lags = [int(r.get("lag") or 0) for r in cluster.get("replicas") or []]
    problems = replica_problems(cluster)
    if problems:
        checks.append(
            Check("replicas", target, "warning", "; ".join(problems), value=max(lags, default=0))
        )
    else:
        checks.append(
            Check(
                "replicas",
                target,
                "ok",
                f"{_plural(len(lags), 'replica')} current",
                value=max(lags, default=0),
            )
        )
    return checks


# -- grading ---------------------------------------------------------------------------------


def _grade(
    name: str,
    target: str,
    value: float,
    text: str,
    warn: Optional[float],
    crit: Optional[float],
    shown: Any = None,
) -> Check:
    """``value`` at or above ``crit`` is CRITICAL, at or above ``warn`` WARNING."""
    show = shown if shown is not None else (lambda v: f"{v:g}")
    if crit is not None and value >= crit:
        return Check(
            name, target, "critical", f"{text} (>= {name}_crit {show(crit)})", value, warn, crit
        )
    if warn is not None and value >= warn:
        return Check(
            name, target, "warning", f"{text} (>= {name}_warn {show(warn)})", value, warn, crit
        )
    return Check(name, target, "ok", text, value, warn, crit)


_FRACTION = re.compile(r"(\.\d+)")


def parse_time(text: Optional[str]) -> Optional[datetime.datetime]:
    """An RFC 3339 time as the server writes it (nanoseconds, ``Z``), or ``None``."""
    if not text or text.startswith("0001-01-01"):
        return None
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    value = _FRACTION.sub(lambda m: (m.group(1) + "000000")[:7], value, count=1)
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:
        return None


def human_seconds(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``5400`` -> ``1h30m``; ``2.5`` -> ``2.5s``."""
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return "".join(shown[:2]) or "0s"


def _consumer_checks(
    stream: str, info: Mapping[str, Any], thresholds: Mapping[str, float], stream_replicas: int
) -> list[Check]:
    config = info.get("config") or {}
    target = f"consumer {stream} > {info.get('name', '?')}"
    checks: list[Check] = []
    # num_replicas 0: the consumer has as many replicas as its stream.
    replicas = int(config.get("num_replicas") or 0) or stream_replicas
    if replicas > 1:
        checks += _leader_checks(target, replicas, info.get("cluster") or {})

    pending = int(info.get("num_pending") or 0)
    checks.append(
        _grade(
            "lag",
            target,
            pending,
            f"lag {pending}",
            thresholds.get("lag_warn"),
            thresholds.get("lag_crit"),
        )
    )

    ack_pending = int(info.get("num_ack_pending") or 0)
    max_ack = int(config.get("max_ack_pending") or -1)
    of = f" of {max_ack}" if max_ack > 0 else ""
    if max_ack > 0 and ack_pending >= max_ack:
        checks.append(
            Check(
                "ack_pending",
                target,
                "critical",
                f"ack pending {ack_pending}{of}: stalled (the server delivers no more "
                "until some are acked)",
                ack_pending,
                thresholds.get("ack_pending_warn"),
                thresholds.get("ack_pending_crit"),
            )
        )
    else:
        checks.append(
            _grade(
                "ack_pending",
                target,
                ack_pending,
                f"ack pending {ack_pending}{of}",
                thresholds.get("ack_pending_warn"),
                thresholds.get("ack_pending_crit"),
            )
        )

    redelivered = int(info.get("num_redelivered") or 0)
    checks.append(Check("redelivered", target, "ok", f"{redelivered} redelivered", redelivered))
    if not config.get("deliver_subject"):
        waiting = int(info.get("num_waiting") or 0)
        checks.append(
            Check("waiting", target, "ok", f"{_plural(waiting, 'waiting pull')}", waiting)
        )

    checks.append(_inactivity(target, info, pending + ack_pending, thresholds))
    return checks


def _inactivity(
    target: str, info: Mapping[str, Any], work: int, thresholds: Mapping[str, float]
) -> Check:
    """How long since the consumer last delivered or was acked, judged only while it has
    work (messages pending or unacked): an idle consumer with nothing to do is fine."""
    # The server's own clock ("ts") so that a skewed local clock does not count.
    now = parse_time(info.get("ts")) or datetime.datetime.now(datetime.timezone.utc)
    times = [
        parse_time((info.get("delivered") or {}).get("last_active")),
        parse_time((info.get("ack_floor") or {}).get("last_active")),
    ]
    last = max((t for t in times if t is not None), default=None)
    warn, crit = thresholds.get("inactive_warn"), thresholds.get("inactive_crit")
    if last is None:
        created = parse_time(info.get("created"))
        idle = max(0.0, (now - created).total_seconds()) if created else 0.0
        text = f"never active (created {human_seconds(idle)} ago)"
    else:
        idle = max(0.0, (now - last).total_seconds())
        text = f"last active {human_seconds(idle)} ago"
    if work == 0:
        return Check("inactive", target, "ok", f"{text}, nothing pending", idle, warn, crit)
    return _grade(
        "inactive", target, idle, f"{text}, {work} outstanding", warn, crit, human_seconds
    )


# -- one stream ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Scope:
    """What to check, and the thresholds: the options and the declared consumers."""

    options: Mapping[str, float]
    declared: Mapping[str, Mapping[str, Mapping[str, Any]]]  # stream -> consumer -> settings
    only_declared: bool
    timeout: float

    def thresholds(self, stream: str, consumer: Mapping[str, Any]) -> tuple[dict[str, float], str]:
        """A consumer's thresholds and a problem reading them (or ``""``).

        Precedence, per setting: the consumer's own declaration (the topology's entry when
        the topology declares the consumer, else the live consumer's metadata), then the
        option (keyword argument / command line), else none.
        """
        name = str(consumer.get("name", ""))
        entry = self.declared.get(stream, {}).get(name)
        raw = declared_settings(entry if entry is not None else consumer.get("config") or {})
        merged = dict(self.options)
        bad = []
        for key, value in raw.items():
            try:
                merged[key] = parse_setting(key, value)
            except InvalidArgumentError as exc:
                bad.append(str(exc))
        return merged, "; ".join(bad)


async def _check_stream(bus: Bus, stream: str, scope: _Scope) -> list[Check]:
    target = f"stream {stream}"
    declared = scope.declared.get(stream, {})
    t = scope.timeout
    info, consumers = await asyncio.gather(
        _api(bus, f"STREAM.INFO.{stream}", None, t),
        _paged(bus, f"CONSUMER.LIST.{stream}", "consumers", t),
        return_exceptions=True,
    )
    if isinstance(info, StreamNotFoundError):
        checks = [Check("stream", target, "critical", "missing")]
        checks += [
            Check("consumer", f"consumer {stream} > {c}", "critical", "missing (no stream)")
            for c in declared
        ]
        return checks
    if isinstance(info, BaseException):
        return [Check("stream", target, "unknown", f"not readable: {_describe(info, t)}")]

    config, state = info.get("config") or {}, info.get("state") or {}
    replicas = _replicas_of(config)
    messages = int(state.get("messages") or 0)
    checks = [Check("stream", target, "ok", f"{_plural(messages, 'message')}", messages)]
    if replicas > 1:
        checks += _leader_checks(target, replicas, info.get("cluster") or {})

    if isinstance(consumers, BaseException):
        checks.append(
            Check(
                "consumer", target, "unknown", f"consumers not readable: {_describe(consumers, t)}"
            )
        )
        return checks
    live = {str(c.get("name")): c for c in consumers}
    for name, ci in live.items():
        undeclared = name not in declared
        if undeclared and (scope.only_declared or not (ci.get("config") or {}).get("durable_name")):
            continue  # another's consumer, or an ephemeral one (a replay, a subscription)
        thresholds, bad = scope.thresholds(stream, ci)
        if bad:
            checks.append(Check("consumer", f"consumer {stream} > {name}", "unknown", bad))
        checks += _consumer_checks(stream, ci, thresholds, replicas)
    checks += [
        Check("consumer", f"consumer {stream} > {name}", "critical", "missing")
        for name in declared
        if name not in live
    ]
    return checks


# -- the whole check -------------------------------------------------------------------------


def _declared(bus: Bus) -> dict[str, dict[str, Mapping[str, Any]]]:
    topology = bus.topology
    if topology is None:
        return {}
    streams = topology.to_dict().get("streams") or {}
    return {
        name: {str(c): dict(entry or {}) for c, entry in (spec.get("consumers") or {}).items()}
        for name, spec in streams.items()
    }


async def _connection_check(bus: Bus, timeout: float) -> tuple[Check, bool]:
    """The connection and JetStream; also whether the server can be asked anything more."""
    try:
        health: Health = await bus._core.health(timeout)
    except NatsbusError as exc:
        return Check("connection", "connection", "critical", str(exc)), False
    where = bus.servers  # passwords redacted
    if not health.connected:
        why = f": {health.error}" if health.error else ""
        return Check(
            "connection", "connection", "critical", f"not connected to {where}{why}"
        ), False
    server = f"{health.server_name} ({health.server_version})"
    if not health.jetstream:
        why = health.error or "JetStream is not enabled"
        return Check("connection", "connection", "critical", f"{server}: {why}", health.rtt), True
    rtt = f", rtt {health.rtt * 1000:.1f}ms" if health.rtt is not None else ""
    return Check("connection", "connection", "ok", f"connected to {server}{rtt}", health.rtt), True


async def run_check(
    bus: Bus,
    *,
    options: Mapping[str, Any],
    streams: Optional[Iterable[str]],
    timeout: float,
) -> CheckReport:
    """``bus.check()``: see its docstring."""
    thresholds = parse_options(options)
    timeout = parse_seconds("timeout", timeout)
    names = None if streams is None else [streams] if isinstance(streams, str) else list(streams)
    connection, reachable = await _connection_check(bus, timeout)
    checks = [connection]
    if not reachable:
        return CheckReport(tuple(checks))
    declared = _declared(bus)
    scope = _Scope(thresholds, declared, only_declared=bus.topology is not None, timeout=timeout)
    if names is None:
        if bus.topology is not None:
            names = list(bus.topology.streams)
        else:
            try:
                names = [str(n) for n in await _paged(bus, "STREAM.NAMES", "streams", timeout)]
            except (NatsbusError, TimeoutError) as exc:
                checks.append(
                    Check("stream", "streams", "unknown", f"not listed: {_describe(exc, timeout)}")
                )
                return CheckReport(tuple(checks))
    sem = asyncio.Semaphore(_CONCURRENCY)
    results = await asyncio.gather(*(_limited(sem, _check_stream(bus, n, scope)) for n in names))
    for result in results:
        checks += result
    return CheckReport(tuple(checks))


# -- health() with a topology ----------------------------------------------------------------


async def _stream_problems(
    bus: Bus, stream: str, consumers: Sequence[str], timeout: float
) -> list[str]:
    info, names = await asyncio.gather(
        _api(bus, f"STREAM.INFO.{stream}", None, timeout),
        _paged(bus, f"CONSUMER.NAMES.{stream}", "consumers", timeout),
        return_exceptions=True,
    )
    if isinstance(info, StreamNotFoundError):
        return [f"stream {stream} is missing"]
    if isinstance(info, BaseException):
        return [f"stream {stream}: {_describe(info, timeout)}"]
    problems = []
    cluster = info.get("cluster") or {}
    if _replicas_of(info.get("config") or {}) > 1:
        if not cluster.get("leader"):
            problems.append(f"stream {stream}: no leader")
        problems += [f"stream {stream}: {p}" for p in replica_problems(cluster)]
    if isinstance(names, (StreamNotFoundError, ConsumerNotFoundError)):
        names = []
    if isinstance(names, BaseException):
        problems.append(f"stream {stream}: consumers not readable: {_describe(names, timeout)}")
    else:
        live = {str(n) for n in names}
        problems += [f"consumer {stream} > {c} is missing" for c in consumers if c not in live]
    return problems


async def topology_problems(bus: Bus, timeout: float) -> list[str]:
    """One line per declared stream or consumer that is missing, and per replicated
    stream without a leader or with a replica offline or not current."""
    topology = bus.topology
    if topology is None:
        return []
    consumers: dict[str, list[str]] = {}
    for stream, consumer in topology.consumers:
        consumers.setdefault(stream, []).append(consumer)
    sem = asyncio.Semaphore(_CONCURRENCY)
    results = await asyncio.gather(
        *(
            _limited(sem, _stream_problems(bus, s, consumers.get(s, []), timeout))
            for s in topology.streams
        )
    )
    return [p for result in results for p in result]


async def health_with_topology(bus: Bus, timeout: float) -> Health:
    """``bus.health()``: the core's snapshot, plus the topology's problems when there is one."""
    if bus.topology is None or not bus.connected:
        return await bus._core.health(timeout)
    health, problems = await asyncio.gather(
        bus._core.health(timeout), topology_problems(bus, timeout)
    )
    return health.with_problems(problems) if problems else health


# -- text ------------------------------------------------------------------------------------


def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _perfdata(check: Check) -> str:
    """Nagios performance data, ``'label'=value[unit];warn;crit``, for measured numbers."""
    if check.value is None or check.name not in ("connection", "lag", "ack_pending", "inactive"):
        return ""
    unit = "s" if check.name in ("connection", "inactive") else ""
    label = check.target.replace("consumer ", "").replace(" > ", ">")
    label = f"{label} {'rtt' if check.name == 'connection' else check.name}".replace("'", "")
    warn = "" if check.warn is None else f"{check.warn:g}"
    crit = "" if check.crit is None else f"{check.crit:g}"
    return f"'{label}'={check.value:g}{unit};{warn};{crit}".rstrip(";")
