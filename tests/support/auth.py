"""Credentials for test servers: nkey users and operator-mode JWTs with a ``.creds`` file.

Built with the ``nkeys`` package (ed25519 keys in the NATS encoding). A NATS JWT is
``b64url(header).b64url(claims).b64url(signature)``, unpadded, signed with the issuer's nkey;
the header is always ``{"typ":"JWT","alg":"ed25519-nkey"}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

_JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_UNLIMITED = -1


def _new_keypair(prefix: int) -> nkeys.KeyPair:
    seed = nkeys.encode_seed(secrets.token_bytes(32), prefix)
    return nkeys.from_seed(bytearray(seed))


def _text(value: bytes | bytearray) -> str:
    return bytes(value).decode("ascii")


def make_nkey_user() -> tuple[str, str]:
    """A fresh user nkey: ``(seed, public_key)``, e.g. ``("SUA...", "UA...")``."""
    pair = _new_keypair(nkeys.PREFIX_BYTE_USER)
    return _text(pair.seed), _text(pair.public_key)


def nkey_user_config(public_key: str) -> str:
    """Server config text that admits exactly this nkey user."""
    return f'authorization {{\n  users: [ {{ nkey: "{public_key}" }} ]\n}}\n'


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_jwt(claims: dict[str, Any], issuer: nkeys.KeyPair) -> str:
    """Sign ``claims`` with ``issuer``; fills in ``jti``, ``iat`` and ``iss``.

    ``jti`` only has to be unique for the server; like the reference tools it is derived from a
    hash of the claims (here SHA-256, base32 without padding).
    """
    body = dict(claims)
    body["iat"] = int(time.time())
    body["iss"] = _text(issuer.public_key)
    body["jti"] = ""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).rstrip(b"=").decode("ascii")
    signing_input = (
        _b64(json.dumps(_JWT_HEADER, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(body, separators=(",", ":")).encode())
    )
    signature = issuer.sign(signing_input.encode("ascii"))
    return signing_input + "." + _b64(signature)


def decode_jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (for assertions in tests)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def _account_claims(name: str, public_key: str, *, jetstream: bool) -> dict[str, Any]:
    limits: dict[str, Any] = {
        "subs": _UNLIMITED,
        "data": _UNLIMITED,
        "payload": _UNLIMITED,
        "imports": _UNLIMITED,
        "exports": _UNLIMITED,
        "wildcards": True,
        "conn": _UNLIMITED,
        "leaf": _UNLIMITED,
    }
    if jetstream:
        # JetStream is enabled for an account when a storage limit is non-zero; -1 = unlimited.
        limits.update(
            {
                "mem_storage": _UNLIMITED,
                "disk_storage": _UNLIMITED,
                "streams": _UNLIMITED,
                "consumer": _UNLIMITED,
            }
        )
    return {
        "name": name,
        "sub": public_key,
        "nats": {
            "limits": limits,
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        },
    }


@dataclass(frozen=True)
class OperatorSetup:
    """An operator-mode setup: server config text and a user ``.creds`` file."""

    server_config: str
    creds_file: Path
    operator_public_key: str
    account_public_key: str
    user_public_key: str
    user_jwt: str
    user_seed: str


def creds_text(user_jwt: str, user_seed: str) -> str:
    """The standard ``.creds`` file content: the user JWT, then the user's nkey seed."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n"
        "\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n"
        "\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n"
        "\n"
        "*************************************************************\n"
    )


def make_operator_setup(
    directory: str | os.PathLike[str], *, user_name: str = "agent"
) -> OperatorSetup:
    """Create an operator, a system account, a JetStream-enabled account ``APP`` and a user in it.

    Writes ``<directory>/<user_name>.creds`` and returns the server config text (operator JWT,
    memory resolver preloaded with both accounts, ``system_account``) to pass as
    ``NatsServer(config=...)``.
    """
    operator = _new_keypair(nkeys.PREFIX_BYTE_OPERATOR)
    system = _new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    account = _new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    user = _new_keypair(nkeys.PREFIX_BYTE_USER)
    operator_pub = _text(operator.public_key)
    system_pub = _text(system.public_key)
    account_pub = _text(account.public_key)
    user_pub = _text(user.public_key)

    operator_jwt = encode_jwt(
        {
            "name": "natsbus-test-operator",
            "sub": operator_pub,
            "nats": {"system_account": system_pub, "type": "operator", "version": 2},
        },
        operator,
    )
    system_jwt = encode_jwt(_account_claims("SYS", system_pub, jetstream=False), operator)
    account_jwt = encode_jwt(_account_claims("APP", account_pub, jetstream=True), operator)
    user_jwt = encode_jwt(
        {
            "name": user_name,
            "sub": user_pub,
            "nats": {
                "pub": {},
                "sub": {},
                "subs": _UNLIMITED,
                "data": _UNLIMITED,
                "payload": _UNLIMITED,
                "type": "user",
                "version": 2,
            },
        },
        account,
    )

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    creds_file = out / f"{user_name}.creds"
    fd = os.open(creds_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(creds_text(user_jwt, _text(user.seed)))

    server_config = (
        f'operator: "{operator_jwt}"\n'
        f'system_account: "{system_pub}"\n'
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f'  {system_pub}: "{system_jwt}"\n'
        f'  {account_pub}: "{account_jwt}"\n'
        "}\n"
    )
    return OperatorSetup(
        server_config=server_config,
        creds_file=creds_file,
        operator_public_key=operator_pub,
        account_public_key=account_pub,
        user_public_key=user_pub,
        user_jwt=user_jwt,
        user_seed=_text(user.seed),
    )
