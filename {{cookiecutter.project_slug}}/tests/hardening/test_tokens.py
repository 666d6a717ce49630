"""Tokens an attacker would try, against a real production process: each is refused over HTTP (401) and on
every WebSocket endpoint wherever a client may put it (close 1008), and none ever reaches the log.

The forgeries: no algorithm (`alg: none`, whatever its case, with or without a signature), an RS256 token,
an HS256 token keyed with an RSA public key (the HS/RS confusion), one signed with another secret, another
algorithm, a signature or a payload altered (another user's id under alice's signature); and tokens signed
with the service's own secret that are still not valid: expired, not valid before a future `nbf`, issued in
the future, without an expiry, of a user deleted since, of a user deactivated since.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from ..app.test_auth import forged_tokens
from ..app.ws_support import PLACES, TokenPlace, close_code, connect_ws, receive_type
from ..processes import ProcessGroup
from .support import Instance, create_room, start_sqlite_instance

pytestmark = pytest.mark.slow

# Generous: the process logs every step at DEBUG, and the machine may be busy with other suites.
WITHIN = 30.0
# A signature this long cannot turn up in the log by chance; a shorter one (`not.a.jwt`) is checked whole.
DISTINCTIVE = 16

ENDPOINTS = [
    "/ws/rooms/lobby",
    {%- if cookiecutter.use_notifications == "y" %}
    "/ws/notifications",
    {%- endif %}
]
FORGERIES = [
    "alg-none",
    "alg-None",
    "alg-NONE",
    "alg-none-signed",
    "rs256",
    "hs256-keyed-with-a-public-key",
    "payload-of-another-user",
    "nbf-in-the-future",
    "iat-in-the-future",
    "deleted-user",
    "deactivated-user",
]
# What `app.test_auth` forges too: expired, payload or signature altered, other key, other algorithm...
ATTACKS = FORGERIES + sorted(set(forged_tokens("x" * 32, 1)) - {"alg-none"})


def segment(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def claims(user_id: int, *, issued_in: float = 0, **extra: Any) -> dict[str, Any]:
    issued_at = int(time.time() + issued_in)
    return {"sub": str(user_id), "iat": issued_at, "exp": issued_at + 300, **extra}


def hmac_signed(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """A JWS signed with HMAC-SHA256 and `key` whatever the header says: what a forger can make."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def forge(secret: str, user_ids: dict[str, int], valid: dict[str, str]) -> dict[str, str]:
    """Every attack's token, by name; `valid` holds tokens the service issued, by username."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    alice = user_ids["alice"]
    header, _, signature = valid["alice"].split(".")
    unsigned = {
        f"alg-{name}": f"{segment({'alg': name, 'typ': 'JWT'})}.{segment(claims(alice))}."
        for name in ("none", "None", "NONE")
    }
    return {
        **unsigned,
        "alg-none-signed": hmac_signed({"alg": "none", "typ": "JWT"}, claims(alice), secret.encode()),
        "rs256": jwt.encode(claims(alice), private_pem.decode(), algorithm="RS256"),
        "hs256-keyed-with-a-public-key": hmac_signed(
            {"alg": "HS256", "typ": "JWT"}, claims(alice), public_pem
        ),
        "payload-of-another-user": f"{header}.{segment(claims(user_ids['bob']))}.{signature}",
        "nbf-in-the-future": hmac_signed(
            {"alg": "HS256", "typ": "JWT"}, claims(alice, nbf=int(time.time()) + 3600), secret.encode()
        ),
        "iat-in-the-future": hmac_signed(
            {"alg": "HS256", "typ": "JWT"}, claims(alice, issued_in=3600), secret.encode()
        ),
        "deleted-user": valid["dave"],
        "deactivated-user": valid["erin"],
        **{name: token for name, token in forged_tokens(secret, alice).items() if name != "alg-none"},
    }


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """A production process logging at DEBUG, where dave has been deleted and erin deactivated."""
    directory = tmp_path_factory.mktemp("tokens")
    with ProcessGroup(directory) as group:
        instance = start_sqlite_instance(
            group,
            directory,
            "attacked",
            users=["alice", "bob", "dave", "erin"],
            environment="production",
            log_level="DEBUG",
        )
        with httpx.Client(base_url=instance.base_url, timeout=WITHIN) as http:
            create_room(http, instance.tokens["alice"], "lobby")
        database = instance.env["DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
        with sqlite3.connect(database) as connection:
            connection.execute("DELETE FROM users WHERE username = 'dave'")
            connection.execute("UPDATE users SET is_active = 0 WHERE username = 'erin'")
        connection.close()
        yield instance


@pytest.fixture(scope="module")
def attacks(instance: Instance) -> dict[str, str]:
    with httpx.Client(base_url=instance.base_url, timeout=WITHIN) as http:
        user_ids = {
            username: http.get("/users/me", headers=instance.headers(username)).json()["id"]
            for username in ("alice", "bob")
        }
    return forge(instance.env["SECRET_KEY"], user_ids, instance.tokens)


async def offer_everywhere(instance: Instance, token: str, endpoints: list[str]) -> None:
    """Send `token` over HTTP (header and query) and to `endpoints` in each place; each must refuse it."""
    async with httpx.AsyncClient(base_url=instance.base_url, timeout=WITHIN) as http:
        for response in (
            await http.get("/users/me", headers={"Authorization": f"Bearer {token}"}),
            await http.get("/users/me", params={"token": token}),
        ):
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
    for endpoint in endpoints:
        for place in PLACES:
            async with connect_ws(instance.ws(endpoint), token, place=place) as websocket:
                assert await close_code(websocket, within=WITHIN) == 1008, (endpoint, place)


def assert_not_in_log(instance: Instance, token: str) -> None:
    output = instance.server.output()
    assert token not in output
    signature = token.rsplit(".", 1)[-1]
    assert len(signature) < DISTINCTIVE or signature not in output


@pytest.mark.parametrize("attack", ATTACKS)
async def test_a_forged_or_stale_token_is_refused_everywhere(
    instance: Instance, attacks: dict[str, str], attack: str
) -> None:
    await offer_everywhere(instance, attacks[attack], ENDPOINTS)


@pytest.mark.parametrize("attack", ATTACKS)
async def test_a_refused_token_never_reaches_the_log(
    instance: Instance, attacks: dict[str, str], attack: str
) -> None:
    await offer_everywhere(instance, attacks[attack], ENDPOINTS[:1])
    assert_not_in_log(instance, attacks[attack])


@pytest.mark.parametrize("place", PLACES)
async def test_a_valid_token_works_in_each_place_and_never_reaches_the_log(
    instance: Instance, place: TokenPlace
) -> None:
    token = instance.tokens["bob"]
    async with connect_ws(instance.ws("/ws/rooms/lobby"), token, place=place) as websocket:
        await receive_type(websocket, "presence.state", within=WITHIN)
    assert_not_in_log(instance, token)
