"""Helpers of the WebSocket tests: clients that speak JSON, and the users and rooms they need."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import pytest
from httpx import AsyncClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from ..processes import ProcessGroup, ServerProcess
from .support import PASSWORD, AuthHeaders

# `@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)`: the test runs on both brokers.
BROKERS = ["memory", "redis"]


@dataclass
class Lobby:
    """Alice's and Bob's tokens, and the URL of the public room "lobby" that Alice created."""

    alice: str
    bob: str
    url: str


TokenPlace = Literal["header", "query", "subprotocol"]
PLACES: tuple[TokenPlace, ...] = ("header", "query", "subprotocol")


async def token_for(auth_headers: AuthHeaders, username: str) -> str:
    """Register `username` and return their access token."""
    headers = await auth_headers(username)
    return headers["Authorization"].removeprefix("Bearer ")


async def create_room(client: AsyncClient, token: str, name: str, *, private: bool = False) -> None:
    response = await client.post(
        "/rooms",
        json={"name": name, "title": name.title(), "is_private": private},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text


def instance_env(database_url: str, broker_url: str, broker_channel: str, **settings: str) -> dict[str, str]:
    """The environment of app instances that share a database and a broker, with `root` as superuser."""
    return {
        "ENVIRONMENT": "test",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "BROKER_CHANNEL": broker_channel,
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "1024",
        "AUTH_ATTEMPTS_PER_ADDRESS": "1000000",  # every client logs in from the same address
        "AUTH_ATTEMPTS_PER_USERNAME": "1000000",
        "FIRST_SUPERUSER": "root",
        "FIRST_SUPERUSER_PASSWORD": PASSWORD,
        **{name.upper(): value for name, value in settings.items()},
    }


def start_instances(
    group: ProcessGroup, env: dict[str, str], names: Sequence[str] = ("app1", "app2")
) -> list[ServerProcess]:
    """App instances started side by side: each spends seconds importing, and they share two cores."""
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(lambda name: group.start_app(name, env=env), names))


async def log_in(http: AsyncClient, username: str, *, register: bool = True) -> str:
    """The access token of `username` (registered first, unless told otherwise) on a running instance."""
    if register:
        registered = await http.post("/auth/register", json={"username": username, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
    token = await http.post("/auth/token", data={"username": username, "password": PASSWORD})
    assert token.status_code == 200, token.text
    access_token: str = token.json()["access_token"]
    return access_token


@asynccontextmanager
async def connect_ws(
    url: str, token: str | None = None, *, place: TokenPlace = "header", **query: Any
) -> AsyncIterator[ClientConnection]:
    """A WebSocket client of `url`, sending `token` where a client may put it."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None and place == "header" else {}
    subprotocols = None
    if token is not None and place == "subprotocol":
        subprotocols = [Subprotocol("bearer"), Subprotocol(token)]
    if token is not None and place == "query":
        query["token"] = token
    if query:
        url = f"{url}?{urlencode(query)}"
    async with connect(
        url, additional_headers=headers, subprotocols=subprotocols, open_timeout=30, close_timeout=2
    ) as websocket:
        yield websocket


async def send_json(websocket: ClientConnection, frame: Any) -> None:
    await websocket.send(json.dumps(frame))


async def receive_json(websocket: ClientConnection, within: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        frame: dict[str, Any] = json.loads(await websocket.recv())
    return frame


async def receive_type(websocket: ClientConnection, frame_type: str, within: float = 5.0) -> dict[str, Any]:
    """The next frame of `frame_type`, skipping the others (presence and typing come at any time)."""
    async with asyncio.timeout(within):
        while (frame := await receive_json(websocket, within)).get("type") != frame_type:
            pass
    return frame


async def assert_silent(websocket: ClientConnection, frame_type: str, within: float = 0.3) -> None:
    """No frame of `frame_type` arrives within `within` seconds."""
    with pytest.raises(TimeoutError):
        await receive_type(websocket, frame_type, within)


PRESENCE_CHANGES = frozenset({"presence.join", "presence.leave", "presence.diff"})


def presence_changes(frame: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Who came and who went, by a `presence.join` or `presence.leave` (the one change of its tick) or a
    `presence.diff` (several)."""
    if frame["type"] == "presence.diff":
        return frame["joins"], frame["leaves"]
    return ([frame["user"]], []) if frame["type"] == "presence.join" else ([], [frame["user"]])


async def receive_presence(
    websocket: ClientConnection, user: str, *, present: bool | None = True, within: float = 5.0
) -> dict[str, Any]:
    """The next frame that says `user` came (`present`), went (not `present`) or either (None), skipping
    the others."""
    async with asyncio.timeout(within):
        while True:
            frame = await receive_json(websocket, within)
            if frame.get("type") not in PRESENCE_CHANGES:
                continue
            joins, leaves = presence_changes(frame)
            if user in (joins if present else leaves) or (present is None and user in joins + leaves):
                return frame


async def assert_not_announced(websocket: ClientConnection, user: str, within: float = 0.3) -> None:
    """No frame says within `within` seconds that `user` came or went."""
    with pytest.raises(TimeoutError):
        await receive_presence(websocket, user, present=None, within=within)


async def close_code(websocket: ClientConnection, within: float = 5.0) -> int | None:
    """The code the server closes with, once it does (frames sent before the close are skipped)."""
    async with asyncio.timeout(within):
        try:
            while True:
                await websocket.recv()
        except ConnectionClosed:
            return websocket.close_code
