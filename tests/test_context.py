"""natscli contexts and natscli's NATS_* variables (issue 14, part 4).

A context file as ``nats context add`` writes it, read from ``$XDG_CONFIG_HOME/nats/context``;
explicit arguments and flags win over the NATS_* variables, which win over the context; the
context's secrets never appear in output.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import natsbus
from natsbus.testing import NatsServer
from support.certs import CertFiles
from support.fixtures import USER, USER_PASSWORD


def write_context(home: Path, name: str, **settings: object) -> Path:
    folder = home / "nats" / "context"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    # The shape natscli writes: every field, empty when unset.
    base = {k: "" for k in ("description", "url", "user", "password", "token", "creds", "nkey")}
    path.write_text(json.dumps({**base, **settings}, indent=2))
    return path


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for var in ("NATS_URL", "NATS_CONTEXT", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return home


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbus", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


async def test_a_context_gives_servers_and_credentials(
    userpass_server: NatsServer, config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"nats://127.0.0.1:{userpass_server.port}"
    write_context(config_home, "prod", url=url, user=USER, password=USER_PASSWORD)
    async with natsbus.connect(context="prod") as bus:
        assert bus.connected
    monkeypatch.setenv("NATS_CONTEXT", "prod")
    async with natsbus.connect() as bus:
        assert bus.connected
    out = cli("status", "--json")
    assert out.returncode == 0, out.stderr
    assert "streams" in json.loads(out.stdout)
    # Explicit flags win over the context.
    wrong = cli("status", "--user", USER, "--password", "not-it")
    assert wrong.returncode == 1 and "auth" in wrong.stderr.lower()
    assert USER_PASSWORD not in wrong.stdout + wrong.stderr


async def test_a_context_file_by_path_with_tls_inbox_and_domain(
    tls_server: NatsServer, tls_files: CertFiles, tmp_path: Path, config_home: Path
) -> None:
    path = tmp_path / "edge.json"
    path.write_text(
        json.dumps(
            {
                "url": f"tls://127.0.0.1:{tls_server.port}",
                "ca": str(tls_files.ca),
                "inbox_prefix": "_INBOX_ctx",
            }
        )
    )
    async with natsbus.connect(context=str(path)) as bus:
        assert bus.connected
        reply_to = []
        async with bus.subscribe("ctx.echo") as sub:
            pending = asyncio.ensure_future(bus.request("ctx.echo", b"ping", timeout=5))
            msg = await sub.next(timeout=5)
            assert msg is not None
            reply_to.append(msg.reply)
            assert msg.reply is not None
            bus.publish_core(msg.reply, b"pong")
            assert (await pending).payload == b"pong"
        assert reply_to[0] is not None and reply_to[0].startswith("_INBOX_ctx.")


async def test_natscli_variables_are_read_as_natscli_reads_them(
    tls_server: NatsServer, tls_files: CertFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_CA", str(tls_files.ca))
    monkeypatch.setenv("NATS_TIMEOUT", "2s")
    async with natsbus.connect(f"tls://127.0.0.1:{tls_server.port}") as bus:
        assert bus.connected
    monkeypatch.setenv("NATS_TIMEOUT", "soon")
    with pytest.raises(natsbus.InvalidArgumentError, match=r"\$NATS_TIMEOUT"):
        natsbus.connect(f"tls://127.0.0.1:{tls_server.port}")


def test_a_missing_context_says_where_it_looked_and_what_there_is(config_home: Path) -> None:
    write_context(config_home, "staging", url="nats://x:4222", password="hunter2-secret")
    with pytest.raises(natsbus.InvalidArgumentError) as raised:
        natsbus.connect(context="prod")
    text = str(raised.value)
    assert "natscli context 'prod' not found" in text and "staging" in text
    out = cli("status", "--context", "prod")
    assert out.returncode == 1 and "staging" in out.stderr
    assert "hunter2-secret" not in out.stderr


def test_a_context_natsbus_cannot_use_is_refused_with_the_reason(config_home: Path) -> None:
    write_context(config_home, "nsc", nsc="nsc://operator/account/user")
    with pytest.raises(natsbus.InvalidArgumentError, match="'nsc', which natsbus does not support"):
        natsbus.connect(context="nsc")
