"""Declarative streams through the Python API: load, validate, plan, apply, verify, export.

Everything that touches a server runs against a real nats-server; tests whose outcome depends on
what else is on the server use ``fresh_server``.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import message_count, stored, unique

import natsbus
from natsbus.testing import NatsServer

YAML_TOPOLOGY = """\
streams:
  ORDERS:
    subjects: ["orders.>"]
    retention: limits
    storage: memory
    max_age: 7d
    max_bytes: 1GiB
    duplicate_window: 2m
    replicas: ${NATS_REPLICAS:-1}
    consumers:
      fulfillment:
        ack_policy: explicit
        ack_wait: 30s
        max_deliver: 5
        max_ack_pending: 1000
  EVENTS:
    subjects: ["events.>", "audit.*"]
    max_age: 30d
    max_msgs: unlimited
"""

JSON_TOPOLOGY = {
    "streams": {
        "ORDERS": {
            "subjects": ["orders.>"],
            "retention": "limits",
            "storage": "memory",
            "max_age": "7d",
            "max_bytes": "1GiB",
            "duplicate_window": 120_000_000_000,
            "num_replicas": 1,
            "consumers": {
                "fulfillment": {
                    "ack_policy": "explicit",
                    "ack_wait": "30s",
                    "max_deliver": 5,
                    "max_ack_pending": 1000,
                }
            },
        },
        "EVENTS": {"subjects": ["events.>", "audit.*"], "max_age": "30d", "max_msgs": -1},
    }
}

TOML_TOPOLOGY = """\
[streams.ORDERS]
subjects = ["orders.>"]
retention = "limits"
storage = "memory"
max_age = "7d"
max_bytes = "1GiB"
duplicate_window = "2m"
replicas = 1

[streams.ORDERS.consumers.fulfillment]
ack_policy = "explicit"
ack_wait = "30s"
max_deliver = 5
max_ack_pending = 1000

[streams.EVENTS]
subjects = ["events.>", "audit.*"]
max_age = "30d"
max_msgs = "unlimited"
"""


def _write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def _single_stream(name: str, **config: Any) -> dict[str, Any]:
    return {"streams": {name: {"subjects": [f"{name.lower()}.>"], **config}}}


# -- loading -----------------------------------------------------------------------------------


def test_yaml_json_and_toml_load_to_the_same_topology(tmp_path: Path) -> None:
    from_yaml = natsbus.Topology.load(_write(tmp_path / "t.yaml", YAML_TOPOLOGY))
    from_yml = natsbus.Topology.load(_write(tmp_path / "t.yml", YAML_TOPOLOGY))
    from_json = natsbus.Topology.load(_write(tmp_path / "t.json", json.dumps(JSON_TOPOLOGY)))
    from_toml = natsbus.Topology.load(_write(tmp_path / "t.toml", TOML_TOPOLOGY))
    from_dict = natsbus.Topology.from_dict(JSON_TOPOLOGY)

    expected = from_yaml.to_dict()
    for other in (from_yml, from_json, from_toml, from_dict):
        assert other.to_dict() == expected
    assert sorted(from_toml.streams) == ["EVENTS", "ORDERS"]
    assert from_toml.consumers == [("ORDERS", "fulfillment")]
    assert from_yaml.source == str(tmp_path / "t.yaml")
    # human units became the server's own: nanoseconds and bytes
    orders = expected["streams"]["ORDERS"]
    assert orders["max_age"] == 7 * 86400 * 10**9
    assert orders["max_bytes"] == 2**30
    assert orders["consumers"]["fulfillment"]["ack_wait"] == 30 * 10**9


def test_environment_substitution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(
        tmp_path / "env.yaml",
        """\
        streams:
          ${STREAM_NAME}:
            subjects: ["${PREFIX:-jobs}.>"]
            max_age: ${MAX_AGE:-1h}
            max_msgs: ${MAX_MSGS:-100}
        """,
    )
    monkeypatch.setenv("STREAM_NAME", "JOBS")
    monkeypatch.delenv("PREFIX", raising=False)
    monkeypatch.delenv("MAX_AGE", raising=False)
    monkeypatch.setenv("MAX_MSGS", "2500")
    jobs = natsbus.Topology.load(path).to_dict()["streams"]["JOBS"]
    assert jobs["subjects"] == ["jobs.>"]  # default used
    assert jobs["max_age"] == 3600 * 10**9  # default used
    assert jobs["max_msgs"] == 2500  # from the environment

    monkeypatch.setenv("PREFIX", "work")
    monkeypatch.setenv("MAX_AGE", "2d")
    jobs = natsbus.Topology.load(path).to_dict()["streams"]["JOBS"]
    assert jobs["subjects"] == ["work.>"]
    assert jobs["max_age"] == 2 * 86400 * 10**9


def test_every_problem_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "broken.yaml",
        """\
        streams:
          ORDERS:
            subjects: ["orders.>", "shared.created"]
            max_agee: 7d
            duplicate_window: 5 minutes
          AUDIT:
            subjects: ["shared.*"]
            storage: disk
            consumers:
              bad.name:
                ack_policy: explicit
        """,
    )
    with pytest.raises(natsbus.TopologyError) as info:
        natsbus.Topology.load(path)
    problems = info.value.problems
    assert len(problems) >= 5, [str(p) for p in problems]
    assert all(p.file == path for p in problems)

    by_field = {p.field: p for p in problems}
    unknown = by_field["streams.ORDERS.max_agee"]
    assert unknown.line == 4
    assert 'did you mean "max_age"' in unknown.message

    duration = by_field["streams.ORDERS.duplicate_window"]
    assert duration.line == 5
    assert "5 minutes" in duration.message and "30s" in duration.message

    overlap = next(p for p in problems if "overlaps" in p.message)
    assert overlap.line == 7
    assert "shared.*" in overlap.message and "shared.created" in overlap.message
    assert "ORDERS" in overlap.message and "AUDIT" in overlap.message

    storage = by_field["streams.AUDIT.storage"]
    assert storage.line == 8 and "file, memory" in storage.message

    name = next(p for p in problems if "bad.name" in p.field)
    assert name.line == 10 and "'.'" in name.message

    # str(problem) is the compiler-style line the CLI prints; the error lists them all
    assert str(unknown).startswith(f"{path}:4: streams.ORDERS.max_agee: ")
    message = str(info.value)
    for problem in problems:
        assert str(problem) in message


def test_unreadable_file_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(natsbus.TopologyError) as info:
        natsbus.Topology.load(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(info.value)


async def test_connect_with_a_bad_topology_fails_before_connecting(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.yaml", "streams:\n  X:\n    max_age: forever\n")
    # nothing listens on port 1: a ConnectError would mean natsbus tried to connect first
    with pytest.raises(natsbus.TopologyError) as info:
        await natsbus.connect("nats://127.0.0.1:1", topology=path, connect_timeout=1.0)
    assert not isinstance(info.value, natsbus.ConnectError)
    assert info.value.problems[0].field == "streams.X.max_age"


async def test_nothing_is_sent_when_validation_fails(fresh_server: NatsServer) -> None:
    bad = {
        "streams": {
            "GOOD": {"subjects": ["good.>"]},
            "BAD": {"subjects": ["good.x"], "max_msgs": "lots"},
        }
    }
    async with natsbus.connect(fresh_server.url) as bus:
        with pytest.raises(natsbus.TopologyError) as info:
            await bus.ensure_streams(bad)
        assert len(info.value.problems) == 2  # the overlap and the bad number
        names = (await bus.jetstream_api("STREAM.NAMES"))["streams"]
        assert not names  # GOOD was not created either


# -- apply / verify --------------------------------------------------------------------------


async def test_apply_creates_then_is_a_no_op_and_verify_passes(
    fresh_server: NatsServer, tmp_path: Path
) -> None:
    path = _write(tmp_path / "topology.yaml", YAML_TOPOLOGY)
    async with natsbus.connect(fresh_server.url, topology=path) as bus:
        first = await bus.ensure_streams()
        assert first.pending
        assert sorted((c.action, c.stream, c.consumer or "") for c in first.changes) == [
            ("create", "EVENTS", ""),
            ("create", "ORDERS", ""),
            ("create", "ORDERS", "fulfillment"),
        ]

        info = await bus.stream_info("ORDERS")
        cfg = info["config"]
        assert cfg["storage"] == "memory" and cfg["max_age"] == 7 * 86400 * 10**9
        assert cfg["max_bytes"] == 2**30
        assert cfg["metadata"].get("natsbus.managed") == "true"
        consumer = await bus.consumer_info("ORDERS", "fulfillment")
        assert consumer["config"]["max_deliver"] == 5

        second = await bus.ensure_streams()
        assert not second.pending
        assert {c.action for c in second.changes} == {"unchanged"}
        assert "nothing to do" in str(second)

        plan = await bus.verify()
        assert not plan.pending

        # the agents' start-up path works with a file, a dict and a Topology alike
        for same in (JSON_TOPOLOGY, natsbus.Topology.load(path)):
            assert not (await bus.plan(same)).pending


async def test_push_and_pull_consumers_are_created(fresh_server: NatsServer) -> None:
    topo = {
        "streams": {
            "JOBS": {
                "subjects": ["jobs.>"],
                "consumers": {
                    "puller": {"ack_policy": "explicit", "filter_subject": "jobs.a"},
                    "pusher": {"deliver_subject": "deliver.jobs", "ack_policy": "explicit"},
                },
            }
        }
    }
    async with natsbus.connect(fresh_server.url) as bus:
        await bus.ensure_streams(topo)
        pull = await bus.consumer_info("JOBS", "puller")
        push = await bus.consumer_info("JOBS", "pusher")
        assert "deliver_subject" not in pull["config"]
        assert push["config"]["deliver_subject"] == "deliver.jobs"
        assert not (await bus.plan(topo)).pending


async def test_drift_makes_verify_raise_with_the_plan(fresh_server: NatsServer) -> None:
    topo = _single_stream("DRIFT", max_age="1h", description="declared")
    async with natsbus.connect(fresh_server.url) as bus:
        await bus.ensure_streams(topo)
        await bus.verify(topo)

        live = (await bus.stream_info("DRIFT"))["config"]
        live["max_age"] = 2 * 3600 * 10**9  # someone edited the stream by hand
        await bus.jetstream_api("STREAM.UPDATE.DRIFT", live)

        with pytest.raises(natsbus.DriftError) as info:
            await bus.verify(topo)
        plan = info.value.plan
        assert plan is not None and plan.pending
        (change,) = [c for c in plan.changes if c.action != "unchanged"]
        assert change.stream == "DRIFT" and change.consumer is None
        assert change.diff["max_age"] == (2 * 3600 * 10**9, 3600 * 10**9)
        assert "DRIFT" in str(info.value)

        # a declared stream that is missing is drift too
        missing = {"streams": {**topo["streams"], "NOT_THERE": {"subjects": ["nt.>"]}}}
        with pytest.raises(natsbus.DriftError) as info:
            await bus.verify(missing)
        drift = info.value.plan
        assert drift is not None
        assert any(c.action == "create" and c.stream == "NOT_THERE" for c in drift.changes)


async def test_unmanaged_streams_are_reported_and_never_deleted(fresh_server: NatsServer) -> None:
    async with natsbus.connect(fresh_server.url) as bus:
        await bus.jetstream_api(
            "STREAM.CREATE.LEGACY", {"name": "LEGACY", "subjects": ["legacy.>"]}
        )
        await bus.publish("legacy.x", {"keep": True})

        # An agent's apply asks only about what its topology declares...
        applied = await bus.ensure_streams(_single_stream("MANAGED"))
        assert not applied.by_action("unmanaged")
        # ...a plan also lists the rest of the server, by name.
        plan = await bus.plan(_single_stream("MANAGED"))
        unmanaged = plan.by_action("unmanaged")
        assert [(c.stream, c.consumer) for c in unmanaged] == [("LEGACY", None)]
        assert "1 stream on the server but not in the topology" in str(plan)
        assert "- unmanaged stream LEGACY" in plan.render(unmanaged=True)

        assert await message_count(bus, "LEGACY") == 1
        assert not plan.pending
        await bus.verify(_single_stream("MANAGED"))  # unmanaged streams are not drift


# -- refusals --------------------------------------------------------------------------------


async def _fill(bus: natsbus.Bus, subject: str, n: int) -> list[bytes]:
    acks = await bus.publish_many([(subject, {"n": i}) for i in range(n)])
    assert [a.seq for a in acks] == list(range(1, n + 1))
    return [json.dumps({"n": i}, separators=(",", ":")).encode() for i in range(n)]


async def test_storage_change_is_blocked_and_the_data_untouched(bus: natsbus.Bus) -> None:
    name = unique("STORE")
    subject = f"{name.lower()}.x"
    await bus.ensure_streams(_single_stream(name, storage="file"))
    payloads = await _fill(bus, subject, 20)

    with pytest.raises(natsbus.ApplyError) as info:
        await bus.ensure_streams(_single_stream(name, storage="memory"), allow_destructive=True)
    plan = info.value.plan
    assert plan is not None
    (blocked,) = plan.by_action("blocked")
    assert blocked.stream == name
    assert blocked.diff["storage"] == ("file", "memory")
    assert blocked.reason and "storage" in blocked.reason
    assert "storage" in str(info.value) and "nothing was changed" in str(info.value)

    info_after = await bus.stream_info(name)
    assert info_after["config"]["storage"] == "file"
    assert await message_count(bus, name) == 20
    for seq in (1, 10, 20):
        got_subject, data, _ = await stored(bus, name, seq)
        assert got_subject == subject and data == payloads[seq - 1]


async def test_blocked_changes_stop_the_whole_apply(bus: natsbus.Bus) -> None:
    """A blocked consumer change means nothing else in the plan is applied either."""
    name = unique("BLK")
    topo = _single_stream(name, max_age="1h", consumers={"c": {"deliver_policy": "all"}})
    await bus.ensure_streams(topo)
    changed = _single_stream(name, max_age="2h", consumers={"c": {"deliver_policy": "new"}})
    with pytest.raises(natsbus.ApplyError) as info:
        await bus.ensure_streams(changed)
    refused = info.value.plan
    assert refused is not None
    (blocked,) = refused.by_action("blocked")
    assert blocked.consumer == "c" and "deliver_policy" in blocked.diff
    assert (await bus.stream_info(name))["config"]["max_age"] == 3600 * 10**9  # not updated


async def test_workqueue_retention_change_is_blocked(bus: natsbus.Bus) -> None:
    name = unique("WQ")
    await bus.ensure_streams(_single_stream(name))
    plan = await bus.plan(_single_stream(name, retention="workqueue"))
    (blocked,) = plan.by_action("blocked")
    assert blocked.diff["retention"] == ("limits", "workqueue")
    with pytest.raises(natsbus.ApplyError):
        await bus.ensure_streams(
            _single_stream(name, retention="workqueue"), allow_destructive=True
        )
    assert (await bus.stream_info(name))["config"]["retention"] == "limits"


async def test_max_age_change_is_applied_in_place(bus: natsbus.Bus) -> None:
    name = unique("AGE")
    subject = f"{name.lower()}.x"
    await bus.ensure_streams(_single_stream(name, max_age="1h", description="kept"))
    payloads = await _fill(bus, subject, 5)

    plan = await bus.ensure_streams(_single_stream(name, max_age="2h", description="kept"))
    (update,) = plan.by_action("update")
    assert update.diff == {"max_age": (3600 * 10**9, 7200 * 10**9)}

    cfg = (await bus.stream_info(name))["config"]
    assert cfg["max_age"] == 7200 * 10**9
    assert cfg["description"] == "kept"  # the update overlaid, it did not reset other fields
    assert await message_count(bus, name) == 5
    assert (await stored(bus, name, 5))[1] == payloads[4]


async def test_lowered_max_msgs_needs_allow_destructive(bus: natsbus.Bus) -> None:
    name = unique("LIM")
    subject = f"{name.lower()}.x"
    await bus.ensure_streams(_single_stream(name, max_msgs=100))
    payloads = await _fill(bus, subject, 10)
    lowered = _single_stream(name, max_msgs=5)

    plan = await bus.plan(lowered)
    (destructive,) = plan.by_action("destructive")
    assert destructive.diff["max_msgs"] == (100, 5)
    assert destructive.reason and "max_msgs" in destructive.reason

    with pytest.raises(natsbus.ApplyError) as info:
        await bus.ensure_streams(lowered)
    assert "allow_destructive" in str(info.value)
    assert await message_count(bus, name) == 10
    assert (await bus.stream_info(name))["config"]["max_msgs"] == 100

    applied = await bus.ensure_streams(lowered, allow_destructive=True)
    assert [c.stream for c in applied.by_action("destructive")] == [name]
    assert (await bus.stream_info(name))["config"]["max_msgs"] == 5
    assert await message_count(bus, name) == 5
    assert (await stored(bus, name, 10))[1] == payloads[9]  # the newest five are kept
    assert not (await bus.plan(lowered)).pending


async def test_refusal_message_shows_human_units(bus: natsbus.Bus) -> None:
    name = unique("HUM")
    await bus.ensure_streams(_single_stream(name, max_age="2h", max_msgs=100))
    with pytest.raises(natsbus.ApplyError) as info:
        await bus.ensure_streams(_single_stream(name, max_age="1h", max_msgs=5))
    text = str(info.value)
    assert "max_age 2h -> 1h" in text and "max_msgs 100 -> 5" in text
    assert "7200000000000" not in text


async def test_interest_to_limits_is_a_plain_update(bus: natsbus.Bus) -> None:
    name = unique("RET")
    subject = f"{name.lower()}.x"
    await bus.ensure_streams(
        _single_stream(name, retention="interest", consumers={"c": {"ack_policy": "explicit"}})
    )
    await _fill(bus, subject, 3)
    limits = _single_stream(name, retention="limits", consumers={"c": {"ack_policy": "explicit"}})
    plan = await bus.plan(limits)
    (update,) = plan.by_action("update")
    assert update.diff["retention"] == ("interest", "limits")
    await bus.ensure_streams(limits)  # no allow_destructive needed
    assert (await bus.stream_info(name))["config"]["retention"] == "limits"
    assert await message_count(bus, name) == 3


async def test_removing_a_subject_is_destructive(bus: natsbus.Bus) -> None:
    name = unique("SUBJ")
    low = name.lower()
    await bus.ensure_streams({"streams": {name: {"subjects": [f"{low}.a", f"{low}.b"]}}})
    narrowed = {"streams": {name: {"subjects": [f"{low}.a"]}}}
    with pytest.raises(natsbus.ApplyError):
        await bus.ensure_streams(narrowed)
    assert sorted((await bus.stream_info(name))["config"]["subjects"]) == [f"{low}.a", f"{low}.b"]
    await bus.ensure_streams(narrowed, allow_destructive=True)
    assert (await bus.stream_info(name))["config"]["subjects"] == [f"{low}.a"]


# -- export ----------------------------------------------------------------------------------

ROUND_TRIP = """\
streams:
  WORKFLOWS:
    subjects: ["workflows.>"]
    retention: workqueue
    storage: file
    max_age: 7d
    max_bytes: 1GiB
    description: workflow events
    consumers:
      workflow-processor:
        ack_policy: explicit
        max_deliver: 5
        max_ack_pending: 1000
        backoff: [1s, 5s, 30s]
  EVENTS:
    subjects: ["events.>"]
    max_age: 30d
    max_msgs_per_subject: 100
    discard: new
    consumers:
      analytics:
        ack_policy: explicit
        filter_subjects: ["events.user.>", "events.billing.>"]
        deliver_policy: new
      tail:
        deliver_subject: tail.events
        ack_policy: none
  NOTIFICATIONS:
    subjects: ["notifications.>"]
    retention: interest
    storage: memory
    max_age: 24h
    duplicate_window: 1m
"""


async def test_export_round_trips_to_an_empty_server(
    fresh_server: NatsServer, tmp_path: Path
) -> None:
    original = _write(tmp_path / "original.yaml", ROUND_TRIP)
    async with natsbus.connect(fresh_server.url) as bus_a:
        await bus_a.ensure_streams(original)
        exported_yaml = await bus_a.export_yaml()
        exported = await bus_a.export()
        only_events = await bus_a.export(["EVENTS"])
    assert sorted(exported["streams"]) == ["EVENTS", "NOTIFICATIONS", "WORKFLOWS"]
    assert list(only_events["streams"]) == ["EVENTS"]
    assert sorted(exported["streams"]["EVENTS"]["consumers"]) == ["analytics", "tail"]

    exported_file = _write(tmp_path / "exported.yaml", exported_yaml)
    # the exported text is itself a valid topology, equal to the dict form
    assert (
        natsbus.Topology.load(exported_file).to_dict()
        == natsbus.Topology.from_dict(exported).to_dict()
    )
    with NatsServer() as server_b:
        async with natsbus.connect(server_b.url) as bus_b:
            created = await bus_b.ensure_streams(exported_file)
            assert len(created.by_action("create")) == 6  # 3 streams, 3 consumers
            plan = await bus_b.plan(original)
            assert not plan.pending, str(plan)
            await bus_b.verify(original)


# -- concurrency -----------------------------------------------------------------------------


async def test_ten_concurrent_ensure_streams_converge(fresh_server: NatsServer) -> None:
    topo = natsbus.Topology.from_text(ROUND_TRIP, "yaml")
    buses = await asyncio.gather(
        *(natsbus.connect(fresh_server.url, name=f"agent-{i}", topology=topo) for i in range(10))
    )
    try:
        plans = await asyncio.gather(*(b.ensure_streams() for b in buses))
        assert len(plans) == 10
        for plan in plans:  # every agent got a plan, none failed
            assert not plan.by_action("blocked")
        final = await buses[0].plan(topo)
        assert not final.pending, str(final)
        await buses[0].verify(topo)
        names = (await buses[0].jetstream_api("STREAM.NAMES"))["streams"]
        assert sorted(names) == ["EVENTS", "NOTIFICATIONS", "WORKFLOWS"]
    finally:
        await asyncio.gather(*(b.close() for b in buses))


# -- the seeds -------------------------------------------------------------------------------

# The observability agent's 14 streams exactly as its init script declared them (seed 001):
# all limits/memory, 10k messages, 100MB, 7 days, discard old.
OBSERVABILITY_STREAMS = {
    "ALERTS": ["alerts", "alerts.*"],
    "AGENT_TASKS": [
        "metric_agent",
        "log_agent",
        "deployment_agent",
        "tracing_agent",
        "root_cause_agent",
        "notification_agent",
        "postmortem_agent",
        "runbook_agent",
    ],
    "RESPONSES": ["orchestrator_response", "root_cause_result"],
    "ALERT_DATA": ["alert_data_request", "alert_data_response.*"],
    "ROOT_CAUSE": ["root_cause_analysis", "root_cause_result", "rootcause", "rootcause.*"],
    "METRICS": ["metrics", "metrics.*"],
    "LOGS": ["logs", "logs.*"],
    "DEPLOYMENTS": ["deployments", "deployments.*"],
    "TRACES": ["traces", "traces.*"],
    "POSTMORTEMS": ["postmortems", "postmortems.*"],
    "RUNBOOKS": ["runbooks", "runbooks.*", "runbook", "runbook.*"],
    "RUNBOOK_EXECUTIONS": ["runbook.execute", "runbook.status.*"],
    "NOTEBOOKS": ["notebooks", "notebooks.*"],
    "NOTIFICATIONS": ["notification_requests", "notifications", "notifications.*"],
}


def observability_yaml() -> str:
    lines = ["streams:"]
    for name, subjects in OBSERVABILITY_STREAMS.items():
        lines += [
            f"  {name}:",
            f"    subjects: {json.dumps(subjects)}",
            "    retention: limits",
            "    storage: memory",
            "    max_msgs: 10000",
            "    max_bytes: 100MB",
            "    max_age: 7d",
            "    discard: old",
        ]
    return "\n".join(lines) + "\n"


def test_seed_observability_agent_overlaps_are_caught_offline(tmp_path: Path) -> None:
    text = observability_yaml()
    path = _write(tmp_path / "observability.yaml", text)
    with pytest.raises(natsbus.TopologyError) as info:
        natsbus.Topology.load(path)
    problems = info.value.problems
    assert len(problems) == 2, [str(p) for p in problems]
    file_lines = text.splitlines()

    root_cause = next(p for p in problems if "root_cause_result" in p.message)
    assert "RESPONSES" in root_cause.message and "ROOT_CAUSE" in root_cause.message
    runbook = next(p for p in problems if "runbook.execute" in p.message)
    assert "RUNBOOKS" in runbook.message and "RUNBOOK_EXECUTIONS" in runbook.message
    assert "runbook.*" in runbook.message
    for problem in problems:
        assert problem.file == path
        assert problem.line is not None
        # the line points at the subjects of one of the two streams involved
        assert "subjects:" in file_lines[problem.line - 1]


async def test_seed_observability_agent_fixed_applies(fresh_server: NatsServer) -> None:
    """With the two overlaps fixed the 14 streams apply, and nothing catches a subject twice."""
    streams = {k: list(v) for k, v in OBSERVABILITY_STREAMS.items()}
    streams["ROOT_CAUSE"].remove("root_cause_result")  # RESPONSES keeps it
    streams["RUNBOOK_EXECUTIONS"] = ["runbook_exec.execute", "runbook_exec.status.*"]
    topo = {
        "streams": {
            name: {"subjects": subjects, "storage": "memory", "max_msgs": 10000}
            for name, subjects in streams.items()
        }
    }
    async with natsbus.connect(fresh_server.url) as bus:
        plan = await bus.ensure_streams(topo)
        assert len(plan.by_action("create")) == 14
        ack = await bus.publish("root_cause_result", {"ok": True})
        assert ack.stream == "RESPONSES"
        assert not (await bus.plan(topo)).pending


async def test_server_shaped_json_loads_and_applies(
    fresh_server: NatsServer, tmp_path: Path
) -> None:
    """A stream config as the server prints it (``nats stream info --json``: nanoseconds, every
    field) is a topology too."""
    async with natsbus.connect(fresh_server.url) as bus_a:
        await bus_a.jetstream_api(
            "STREAM.CREATE.RAW",
            {"name": "RAW", "subjects": ["raw.>"], "max_age": 3600 * 10**9, "description": "d"},
        )
        config = (await bus_a.stream_info("RAW"))["config"]
    path = _write(tmp_path / "raw.json", json.dumps(config))
    topo = natsbus.Topology.load(path)
    assert topo.streams == ["RAW"]
    with NatsServer() as server_b:
        async with natsbus.connect(server_b.url) as bus_b:
            await bus_b.ensure_streams(topo)
            cfg = (await bus_b.stream_info("RAW"))["config"]
            assert cfg["max_age"] == 3600 * 10**9 and cfg["description"] == "d"
            assert not (await bus_b.plan(topo)).pending
