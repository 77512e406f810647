"""The deployment examples in deploy/ (issue 14, part 7) run natsbus commands the CLI accepts.

Every natsbus invocation in the Dockerfile, the docker-compose file and the Kubernetes
manifests (container args, exec probes, shell healthchecks) is parsed by the CLI's own parser,
so an example can not drift from the flags natsbus has.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

import natsbus.cli

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def from_shell(text: str) -> list[list[str]]:
    """The natsbus command lines of a shell snippet (split at ;, && and ||)."""
    out = []
    for part in re.split(r";|&&|\|\|", text):
        argv = shlex.split(part)
        if argv and argv[0] == "natsbus":
            out.append(argv[1:])
    return out


def from_exec(command: list[str]) -> list[list[str]]:
    if command[:2] == ["sh", "-c"]:
        return from_shell(command[2])
    if command and command[0] == "natsbus":
        return [command[1:]]
    return []


def walk_containers(doc: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found.extend(value)
            else:
                found.extend(walk_containers(value))
    elif isinstance(doc, list):
        for item in doc:
            found.extend(walk_containers(item))
    return found


def invocations() -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    assert entrypoint == ["natsbus"]
    out.append(("Dockerfile CMD", cmd))

    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    for name, service in compose["services"].items():
        build = service.get("build")
        if isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile":
            out.append((f"compose {name}", service["command"]))
        test = service.get("healthcheck", {}).get("test")
        if test and test[0] == "CMD-SHELL":
            out += [(f"compose {name} healthcheck", a) for a in from_shell(test[1])]

    for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "natsbus-init.yaml").read_text()):
        for container in walk_containers(doc):
            if container.get("command") == ["natsbus"]:
                out.append((f"k8s {container['name']}", container["args"]))
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command")
                if command:
                    out += [(f"k8s {container['name']} {probe}", a) for a in from_exec(command)]
    return out


def test_every_natsbus_command_in_deploy_is_one_the_cli_accepts() -> None:
    found = invocations()
    assert len(found) >= 5, found
    parser = natsbus.cli.build_parser()
    for where, argv in found:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"{where}: natsbus {' '.join(argv)} is refused by the CLI (exit {e.code})")
        assert args.command in ("apply", "check", "validate", "verify", "plan"), where
    commands = {argv[0] for _, argv in found}
    assert {"apply", "check"} <= commands


def test_the_kubernetes_topology_is_a_valid_topology() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "natsbus-init.yaml").read_text()))
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    topology = natsbus.Topology.from_text(config_map["data"]["topology.yaml"], "yaml")
    assert topology.consumers == [("ORDERS", "billing")]
