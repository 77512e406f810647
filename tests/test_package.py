"""The package as installed: import, version, CLI entry, error hierarchy."""

from __future__ import annotations

import builtins
import subprocess
import sys

import pytest

import natsbus


def test_version_everywhere() -> None:
    assert natsbus.__version__
    out = subprocess.run(
        [sys.executable, "-m", "natsbus", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"natsbus {natsbus.__version__}"


def test_error_hierarchy() -> None:
    base = natsbus.NatsbusError
    for name in [
        "ConnectError", "AuthError", "TimeoutError", "TopologyError", "ApplyError",
        "DriftError", "JetStreamError", "NoStreamError", "StreamNotFoundError",
        "ConsumerNotFoundError", "ExpectationError", "DecodeError", "ClosedError",
        "EncodeError", "InvalidArgumentError", "NoRespondersError", "BatchPublishError",
        "MessageNotFoundError", "ServiceError",
    ]:  # fmt: skip
        cls = getattr(natsbus, name)
        assert issubclass(cls, base), name
        assert cls.__module__ == "natsbus"
    assert issubclass(natsbus.ConnectError, ConnectionError)
    assert issubclass(natsbus.AuthError, natsbus.ConnectError)
    assert issubclass(natsbus.TimeoutError, builtins.TimeoutError)
    for cls in (natsbus.StreamNotFoundError, natsbus.ConsumerNotFoundError,
                natsbus.ExpectationError, natsbus.MessageNotFoundError):  # fmt: skip
        assert issubclass(cls, natsbus.JetStreamError)
    assert issubclass(natsbus.NoStreamError, natsbus.NoRespondersError)
    e = natsbus.JetStreamError("x")
    assert e.err_code is None and e.description is None
    assert issubclass(natsbus.StreamUnavailableError, natsbus.TimeoutError)


def test_errors_are_defined_once_in_python_and_raised_from_rust() -> None:
    import natsbus.errors

    for name in natsbus.errors.__all__:
        cls = getattr(natsbus.errors, name)
        assert getattr(natsbus, name) is cls, name
        assert cls.__doc__ and len(cls.__doc__) > 20, name
    # what the extension raises is that class, with its detail attached
    try:
        natsbus.Topology.from_text("streams:\n  S:\n    subjects: [a]\n    max_agee: 1s\n")
    except natsbus.errors.TopologyError as exc:
        assert type(exc) is natsbus.errors.TopologyError
        assert [p.field for p in exc.problems] == ["streams.S.max_agee"]
        assert exc.problems[0].line == 4
    else:
        raise AssertionError("expected TopologyError")
    try:
        natsbus._natsbus._decode(b"{not json")
    except natsbus.errors.DecodeError as exc:
        assert type(exc) is natsbus.errors.DecodeError and exc.subject is None
    else:
        raise AssertionError("expected DecodeError")


def test_public_names_are_exported() -> None:
    for name in natsbus.__all__:
        assert hasattr(natsbus, name), name


def test_plan_change_and_problem_are_frozen_data() -> None:
    p = natsbus.Problem("t.yaml", 4, "streams.S.max_agee", 'unknown field "max_agee"')
    file, line, field, message = p  # unpacks like the tuple it used to be
    assert (file, line, field) == ("t.yaml", 4, "streams.S.max_agee") and p[-1] == message
    assert str(p) == 't.yaml:4: streams.S.max_agee: unknown field "max_agee"'
    assert p == natsbus.Problem(*p) and hash(p) == hash(natsbus.Problem(*p))
    change = natsbus.Change("update", "S", None, {"max_age": (7200, 3600)})
    assert change.target == "stream S" and change.diff["max_age"] == (7200, 3600)
    plan = natsbus.Plan([change, natsbus.Change("unchanged", "S", "c")])
    assert (
        plan.pending
        and bool(plan)
        and [c.action for c in plan.by_action("unchanged")] == ["unchanged"]
    )
    assert plan.to_dict() == {
        "pending": True,
        "changes": [
            {"action": "update", "stream": "S", "consumer": None,
             "diff": {"max_age": [7200, 3600]}, "reason": None},
            {"action": "unchanged", "stream": "S", "consumer": "c", "diff": {}, "reason": None},
        ],
    }  # fmt: skip
    again = natsbus.Plan.from_dict(plan.to_dict())
    assert again.to_dict() == plan.to_dict() and again.changes[0] == change
    assert not natsbus.Plan([natsbus.Change("unmanaged", "LEGACY")]).pending
    for obj in (p, change, plan):
        with pytest.raises(AttributeError):
            obj.stream = "X"  # type: ignore[misc,union-attr]
