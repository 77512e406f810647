"""The ``natsbus`` command line, run as a subprocess against real servers.

What is checked is what an init container or a CI job sees: exit codes, output text, and the
streams and messages on the server afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional

import pytest
from conftest import message_count

import natsbus
from natsbus.testing import NatsServer
from support.certs import CertFiles
from support.fixtures import TOKEN, USER, USER_PASSWORD, CredsServer, NkeyServer

TOPOLOGY = """\
streams:
  ORDERS:
    subjects: ["orders.>"]
    storage: file
    max_age: 7d
    max_msgs: 1000
    consumers:
      fulfillment:
        ack_policy: explicit
        ack_wait: 30s
        max_deliver: 5
  EVENTS:
    subjects: ["events.>"]
    max_age: 30d
"""

BROKEN = """\
streams:
  ORDERS:
    subjects: ["orders.>"]
    max_agee: 7d
  AUDIT:
    subjects: ["orders.created"]
    ack_wait: soon
"""


def run(
    *args: str, env: Optional[dict[str, str]] = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``python -m natsbus ARGS`` with a clean NATS_* environment (plus ``env``)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    if "NATS_SERVER_BIN" in os.environ:
        base["NATS_SERVER_BIN"] = os.environ["NATS_SERVER_BIN"]
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "natsbus", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=base,
        check=False,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def topology(tmp_path: Path) -> str:
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY, encoding="utf-8")
    return str(path)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


# -- offline ---------------------------------------------------------------------------------


def test_version_and_help() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"natsbus {natsbus.__version__}"
    result = run("--help")
    assert result.returncode == 0
    for command in ("validate", "plan", "apply", "verify", "status", "export", "server"):
        assert command in result.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "natsbus"
    if not script.exists():
        pytest.skip("no console script next to the interpreter")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0 and "natsbus" in result.stdout


def test_usage_errors_exit_1_not_2(topology: str) -> None:
    """Exit code 2 is reserved for "changes pending"; a typo must not look like that."""
    for args in (["plan"], ["frobnicate"], ["apply", topology, "--wait", "soon"], []):
        result = run(*args)
        assert result.returncode == 1, (args, result.stderr)
        no_traceback(result)


def test_durations_read_like_the_topology_file() -> None:
    """--wait takes every unit a topology's max_age does (one parser, in the core)."""
    from natsbus.cli import parse_duration

    for text, seconds in [
        ("2.5", 2.5), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0), ("7d", 604800.0),
        ("1w", 604800.0), ("1w2d", 777600.0), ("250us", 0.00025), ("30S", 30.0),
    ]:  # fmt: skip
        assert parse_duration(text) == pytest.approx(seconds), text
        if text.islower() and seconds >= 0.1:  # a topology file takes the same text
            natsbus.Topology.from_dict({"streams": {"S": {"subjects": ["s"], "max_age": text}}})
    for bad in ("soon", "-5s", "1x", "", "inf", "nan", "5 s s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_apply_wait_takes_weeks(fresh_server: NatsServer, topology: str) -> None:
    result = run("apply", topology, "--wait", "1w", "-s", fresh_server.url)
    assert result.returncode == 0, result.stderr


def test_validate_ok(topology: str) -> None:
    result = run("validate", topology)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and "2 streams, 1 consumer" in result.stdout


def test_validate_prints_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", BROKEN)
    result = run("validate", path)
    assert result.returncode == 1
    no_traceback(result)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3, result.stdout
    assert any(
        line.startswith(f"{path}:4: streams.ORDERS.max_agee: ") and 'did you mean "max_age"' in line
        for line in lines
    )
    assert any(line.startswith(f"{path}:6: ") and "overlaps" in line for line in lines)
    assert any(line.startswith(f"{path}:7: streams.AUDIT.ack_wait: ") for line in lines)
    assert "3 problems" in result.stderr


def test_validate_json(tmp_path: Path, topology: str) -> None:
    ok = json.loads(run("validate", "--json", topology).stdout)
    assert ok["ok"] is True and sorted(ok["streams"]) == ["EVENTS", "ORDERS"]
    assert ok["consumers"] == ["ORDERS/fulfillment"]

    result = run("validate", "--json", write(tmp_path, "broken.yaml", BROKEN))
    assert result.returncode == 1
    bad = json.loads(result.stdout)
    assert bad["ok"] is False and len(bad["problems"]) == 3
    assert {"file", "line", "field", "message"} <= set(bad["problems"][0])
    assert {p["line"] for p in bad["problems"]} == {4, 6, 7}


def test_validate_missing_file(tmp_path: Path) -> None:
    result = run("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    no_traceback(result)
    assert "nope.yaml" in result.stdout + result.stderr


def test_server_commands_reject_a_bad_topology_before_connecting(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", BROKEN)
    for command in ("plan", "apply", "verify", "status"):
        result = run(command, path, "-s", "nats://127.0.0.1:1")
        assert result.returncode == 1
        no_traceback(result)
        assert "natsbus: error: 3 problems" in result.stderr
        assert "could not connect" not in result.stderr


# -- plan / apply / verify -------------------------------------------------------------------


def test_plan_apply_verify_exit_codes(fresh_server: NatsServer, topology: str) -> None:
    url = fresh_server.url
    result = run("plan", topology, "-s", url)
    assert result.returncode == 2, result.stderr
    assert "create stream ORDERS" in result.stdout and "create stream EVENTS" in result.stdout

    result = run("verify", topology, "-s", url)
    assert result.returncode == 1
    assert "ORDERS" in result.stdout and "missing" in result.stderr
    no_traceback(result)

    result = run("apply", topology, "-s", url)
    assert result.returncode == 0, result.stderr
    assert "3 to create" in result.stdout  # the executed plan

    result = run("apply", topology, "-s", url)
    assert result.returncode == 0
    assert "nothing to do" in result.stdout

    # connection flags may also come before the command
    result = run("-s", url, "plan", topology)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout

    result = run("verify", topology, "-s", url)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_plan_on_a_dead_server_exits_1(topology: str) -> None:
    result = run("plan", topology, "-s", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    no_traceback(result)
    assert result.stderr.startswith("natsbus: error: could not connect")


async def test_verify_detects_drift(fresh_server: NatsServer, topology: str) -> None:
    assert run("apply", topology, "-s", fresh_server.url).returncode == 0
    async with natsbus.connect(fresh_server.url) as bus:
        live = (await bus.stream_info("EVENTS"))["config"]
        live["max_age"] = 3600 * 10**9
        await bus.jetstream_api("STREAM.UPDATE.EVENTS", live)

    result = run("verify", topology, "-s", fresh_server.url)
    assert result.returncode == 1
    no_traceback(result)
    assert "EVENTS" in result.stdout and "max_age" in result.stdout
    assert "natsbus: error:" in result.stderr

    verdict = json.loads(run("verify", "--json", topology, "-s", fresh_server.url).stdout)
    assert verdict["ok"] is False
    (change,) = [c for c in verdict["plan"]["changes"] if c["action"] != "unchanged"]
    assert change["stream"] == "EVENTS" and change["diff"]["max_age"][0] == 3600 * 10**9

    result = run("plan", topology, "-s", fresh_server.url)
    assert result.returncode == 2


def test_plan_and_apply_json(fresh_server: NatsServer, topology: str) -> None:
    plan = json.loads(run("plan", "--json", topology, "-s", fresh_server.url).stdout)
    assert plan["pending"] is True
    assert {(c["action"], c["stream"], c["consumer"]) for c in plan["changes"]} == {
        ("create", "ORDERS", None),
        ("create", "ORDERS", "fulfillment"),
        ("create", "EVENTS", None),
    }
    applied = json.loads(run("apply", "--json", topology, "-s", fresh_server.url).stdout)
    assert applied["applied"] is True and applied["plan"]["pending"] is True
    again = json.loads(run("apply", "--json", topology, "-s", fresh_server.url).stdout)
    assert again["plan"]["pending"] is False
    plan = json.loads(run("plan", "--json", topology, "-s", fresh_server.url).stdout)
    assert plan["pending"] is False
    assert {c["action"] for c in plan["changes"]} == {"unchanged"}


async def test_apply_refusals(fresh_server: NatsServer, tmp_path: Path, topology: str) -> None:
    url = fresh_server.url
    assert run("apply", topology, "-s", url).returncode == 0
    async with natsbus.connect(url) as bus:
        await bus.publish_many([("orders.created", {"n": i}) for i in range(20)])

    # storage is immutable: refused even with --allow-destructive, nothing touched
    memory = write(tmp_path, "memory.yaml", TOPOLOGY.replace("storage: file", "storage: memory"))
    result = run("apply", memory, "--allow-destructive", "-s", url)
    assert result.returncode == 1
    no_traceback(result)
    assert "blocked" in result.stdout and "storage" in result.stdout
    assert "file -> memory" in result.stdout
    assert result.stderr.startswith("natsbus: error: apply refused")
    refused = json.loads(run("apply", "--json", memory, "-s", url).stdout)
    assert refused["applied"] is False and refused["plan"]["changes"][0]["action"] == "blocked"

    # lowering max_msgs deletes data: refused without --allow-destructive
    lowered = write(tmp_path, "lowered.yaml", TOPOLOGY.replace("max_msgs: 1000", "max_msgs: 5"))
    result = run("apply", lowered, "-s", url)
    assert result.returncode == 1
    assert "destructive" in result.stdout and "max_msgs" in result.stdout
    assert "--allow-destructive" in result.stderr
    assert run("plan", lowered, "-s", url).returncode == 2

    async with natsbus.connect(url) as bus:
        info = await bus.stream_info("ORDERS")
        assert info["config"]["storage"] == "file" and info["config"]["max_msgs"] == 1000
        assert await message_count(bus, "ORDERS") == 20

    result = run("apply", lowered, "--allow-destructive", "-s", url)
    assert result.returncode == 0, result.stderr
    async with natsbus.connect(url) as bus:
        assert await message_count(bus, "ORDERS") == 5

    # a max_age change is an in-place update
    longer = write(tmp_path, "longer.yaml", TOPOLOGY.replace("max_age: 30d", "max_age: 60d"))
    longer_text = Path(longer).read_text().replace("max_msgs: 1000", "max_msgs: 5")
    Path(longer).write_text(longer_text)
    result = run("apply", longer, "-s", url)
    assert result.returncode == 0, result.stderr
    assert "update stream EVENTS" in result.stdout and "30d -> 60d" in result.stdout
    assert run("verify", longer, "-s", url).returncode == 0


# -- status / export -------------------------------------------------------------------------


async def test_status_table(fresh_server: NatsServer, topology: str, tmp_path: Path) -> None:
    url = fresh_server.url
    assert run("apply", topology, "-s", url).returncode == 0
    async with natsbus.connect(url) as bus:
        await bus.publish_many([("orders.created", {"n": i}) for i in range(42)])
        await bus.jetstream_api("STREAM.CREATE.OTHER", {"name": "OTHER", "subjects": ["other"]})

    result = run("status", "-s", url)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert rows["ORDERS"][1] == "orders.>" and rows["ORDERS"][2] == "42"
    assert rows["EVENTS"][2] == "0" and "OTHER" in rows
    assert rows["ORDERS/fulfillment"][1:3] == ["pull", "42"]  # type, pending
    for header in ("MESSAGES", "BYTES", "PENDING", "ACK PENDING", "REDELIVERED"):
        assert header in result.stdout

    # with a topology: only its streams, and the declared-but-missing ones marked
    extra = write(
        tmp_path,
        "more.yaml",
        TOPOLOGY + "  PLANNED:\n    subjects: [planned]\n",
    )
    result = run("status", extra, "-s", url)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert "OTHER" not in rows
    assert rows["PLANNED"][-1] == "MISSING"

    status = json.loads(run("status", "--json", extra, "-s", url).stdout)
    by_name = {s["name"]: s for s in status["streams"]}
    assert by_name["ORDERS"]["messages"] == 42
    assert by_name["ORDERS"]["consumers"][0]["num_pending"] == 42
    assert status["missing_streams"] == ["PLANNED"]


def test_export_round_trips(fresh_server: NatsServer, topology: str, tmp_path: Path) -> None:
    assert run("apply", topology, "-s", fresh_server.url).returncode == 0
    result = run("export", "-s", fresh_server.url)
    assert result.returncode == 0, result.stderr
    assert "ORDERS:" in result.stdout and "fulfillment:" in result.stdout
    exported = write(tmp_path, "exported.yaml", result.stdout)
    assert run("validate", exported).returncode == 0

    with NatsServer() as other:
        assert run("apply", exported, "-s", other.url).returncode == 0
        result = run("plan", topology, "-s", other.url)
        assert result.returncode == 0, result.stdout
        assert run("verify", topology, "-s", other.url).returncode == 0

    as_json = json.loads(run("export", "--json", "ORDERS", "-s", fresh_server.url).stdout)
    assert list(as_json["streams"]) == ["ORDERS"]
    assert as_json["streams"]["ORDERS"]["consumers"]["fulfillment"]["max_deliver"] == 5

    out = tmp_path / "out.yaml"
    result = run("export", "EVENTS", "-o", str(out), "-s", fresh_server.url)
    assert result.returncode == 0 and result.stdout == ""
    assert "EVENTS:" in out.read_text() and "ORDERS" not in out.read_text()

    result = run("export", "NO_SUCH_STREAM", "-s", fresh_server.url)
    assert result.returncode == 1
    no_traceback(result)
    assert "NO_SUCH_STREAM" in result.stderr


# -- apply --wait ----------------------------------------------------------------------------


@pytest.fixture
def late_server() -> Iterator[tuple[int, threading.Thread]]:
    """A server on a known port that starts ~2 s after the test begins."""
    port = free_port()
    server = NatsServer(port=port)
    started = threading.Event()

    def start_later() -> None:
        time.sleep(2.0)
        server.start()
        started.set()

    thread = threading.Thread(target=start_later, daemon=True)
    thread.start()
    try:
        yield port, thread
    finally:
        thread.join(timeout=15)
        server.stop()


async def test_apply_wait_for_a_server_that_starts_later(
    late_server: tuple[int, threading.Thread], topology: str
) -> None:
    port, _ = late_server
    url = f"nats://127.0.0.1:{port}"
    began = time.monotonic()
    result = run("apply", topology, "--wait", "10s", "-s", url)
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert 1.5 < elapsed < 10
    assert "waiting up to 10s" in result.stderr
    assert "3 to create" in result.stdout
    async with natsbus.connect(url) as bus:
        assert (await bus.stream_info("ORDERS"))["config"]["max_msgs"] == 1000


def test_apply_wait_gives_up(topology: str) -> None:
    began = time.monotonic()
    result = run("apply", topology, "--wait", "700ms", "-s", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert 0.5 < time.monotonic() - began < 10
    no_traceback(result)
    assert "was not ready within 0.7s" in result.stderr


def test_apply_without_wait_to_a_dead_address_fails_fast(topology: str) -> None:
    began = time.monotonic()
    result = run("apply", topology, "-s", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert time.monotonic() - began < 5
    no_traceback(result)
    assert result.stderr.startswith("natsbus: error: could not connect")
    assert "--wait" in result.stderr  # tells the user how to wait instead
    assert result.stderr.count("\n") == 1  # one line


# -- connection flags ------------------------------------------------------------------------


def _assert_secret_hidden(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr


def test_user_and_password(userpass_server: NatsServer, topology: str) -> None:
    url = userpass_server.url
    result = run("status", "-s", url, "--user", USER, "--password", USER_PASSWORD)
    assert result.returncode == 0, result.stderr
    _assert_secret_hidden(result, USER_PASSWORD)

    # the password from the environment
    result = run("status", "-s", url, "--user", USER, env={"NATS_PASSWORD": USER_PASSWORD})
    assert result.returncode == 0, result.stderr

    wrong = "wr0ng-Passw0rd"
    result = run("plan", topology, "-s", url, "--user", USER, "--password", wrong)
    assert result.returncode == 1
    no_traceback(result)
    assert "natsbus: error:" in result.stderr and "authorization" in result.stderr
    _assert_secret_hidden(result, wrong, USER_PASSWORD)

    # credentials inside the URL are not echoed either
    host = url.split("//", 1)[1]
    result = run("apply", topology, "--wait", "1s", "-s", f"nats://{USER}:{wrong}@{host}")
    assert result.returncode == 1
    _assert_secret_hidden(result, wrong)

    result = run("status", "-s", url)  # no credentials at all
    assert result.returncode == 1
    no_traceback(result)


def test_token(token_server: NatsServer) -> None:
    result = run("status", "-s", token_server.url, "--token", TOKEN)
    assert result.returncode == 0, result.stderr
    result = run("status", "-s", token_server.url, env={"NATS_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    bad = run("status", "-s", token_server.url, "--token", "not-" + TOKEN)
    assert bad.returncode == 1
    _assert_secret_hidden(bad, TOKEN)


def test_nkey_file(nkey_server: NkeyServer, tmp_path: Path) -> None:
    seed_file = tmp_path / "user.nk"
    seed_file.write_text(nkey_server.seed + "\n")
    result = run("status", "-s", nkey_server.server.url, "--nkey", str(seed_file))
    assert result.returncode == 0, result.stderr
    _assert_secret_hidden(result, nkey_server.seed)


def test_creds_file(creds_server: CredsServer, topology: str) -> None:
    url = creds_server.server.url
    result = run("apply", topology, "-s", url, "--creds", str(creds_server.creds))
    assert result.returncode == 0, result.stderr
    result = run("verify", topology, "-s", url, "--creds", str(creds_server.creds))
    assert result.returncode == 0, result.stderr


def test_tls_ca(tls_server: NatsServer, tls_files: CertFiles) -> None:
    result = run("status", "-s", tls_server.url, "--tls-ca", str(tls_files.ca))
    assert result.returncode == 0, result.stderr
    result = run("status", "-s", tls_server.url, "--tls-ca", "/nonexistent/ca.pem")
    assert result.returncode == 1
    assert "ca.pem" in result.stderr


def test_mutual_tls(mtls_server: NatsServer, tls_files: CertFiles) -> None:
    args: Sequence[str] = (
        "status",
        "-s",
        mtls_server.url,
        "--tls-ca",
        str(tls_files.ca),
        "--tls-cert",
        str(tls_files.client_cert),
        "--tls-key",
        str(tls_files.client_key),
    )
    result = run(*args)
    assert result.returncode == 0, result.stderr
    result = run(*args[:-2])  # certificate without its key
    assert result.returncode == 1
    assert "--tls-key" in result.stderr


# -- natsbus server --------------------------------------------------------------------------


def _start_cli_server(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "natsbus", "server", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "NATS_URL=" in line:
            break
    return proc, lines


async def test_server_command_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc, lines = _start_cli_server("--port", str(port))
    try:
        text = "".join(lines)
        assert f"nats://127.0.0.1:{port}" in text, text
        store = next(line for line in lines if "store dir" in line).split()[3]
        assert os.path.isdir(store)
        async with natsbus.connect(f"nats://127.0.0.1:{port}") as bus:
            health = await bus.health()
            assert health.ok and health.jetstream
            await bus.ensure_streams({"streams": {"DEV": {"subjects": ["dev.>"]}}})
            assert (await bus.publish("dev.x", {"ok": 1})).seq == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    assert code == 0
    assert not os.path.exists(store)  # the temporary store is removed
    with pytest.raises(natsbus.ConnectError):
        await natsbus.connect(f"nats://127.0.0.1:{port}", connect_timeout=1.0)


async def test_server_command_keeps_a_store_dir(tmp_path: Path) -> None:
    store = tmp_path / "data"
    port = free_port()
    for expected_seq in (1, 2):
        proc, _ = _start_cli_server("--port", str(port), "--store-dir", str(store))
        try:
            async with natsbus.connect(f"nats://127.0.0.1:{port}") as bus:
                await bus.ensure_streams({"streams": {"KEEP": {"subjects": ["keep"]}}})
                assert (await bus.publish("keep", "x")).seq == expected_seq
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            assert proc.wait(timeout=15) == 0
    assert (store / "jetstream").is_dir()


def test_server_command_port_in_use(nats_server: NatsServer) -> None:
    result = run("server", "--port", str(nats_server.port), timeout=15)
    assert result.returncode == 1
    assert "already in use" in result.stderr


def test_server_command_without_the_binary() -> None:
    result = run("server", env={"NATS_SERVER_BIN": "/nonexistent/nats-server"})
    assert result.returncode == 1
    no_traceback(result)
    assert 'pip install "natsbus[server]"' in result.stderr
