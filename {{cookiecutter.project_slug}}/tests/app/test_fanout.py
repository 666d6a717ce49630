"""What the room sends is encoded once for all its connections, whoever is left out of it."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from websockets.asyncio.client import ClientConnection

from .support import AuthHeaders
from .ws_support import (
    BROKERS,
    assert_silent,
    connect_ws,
    create_room,
    receive_presence,
    receive_type,
    send_json,
    token_for,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

LISTENERS = 8


async def joined(websocket: ClientConnection, user: str) -> None:
    """Wait for the arrival of `user`, alone in its `presence.join` or with others in a `presence.diff`."""
    await receive_presence(websocket, user)


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_messages_typing_and_presence_are_encoded_once_per_fan_out(
    client: AsyncClient, auth_headers: AuthHeaders, app: FastAPI, ws_url: str
) -> None:
    stats = app.state.manager.stats
    alice = await token_for(auth_headers, "alice")
    await create_room(client, alice, "lobby")
    url = f"{ws_url}/ws/rooms/lobby"
    async with AsyncExitStack() as stack:
        listeners = []
        for number in range(LISTENERS):
            token = await token_for(auth_headers, f"listener{number}")
            listener = await stack.enter_async_context(connect_ws(url, token))
            await receive_type(listener, "presence.state")
            listeners.append(listener)
        alice_ws = await stack.enter_async_context(connect_ws(url, alice))
        alice_tab = await stack.enter_async_context(connect_ws(url, alice))
        for websocket in (alice_ws, alice_tab):
            await receive_type(websocket, "presence.state")
        for listener in listeners:
            await joined(listener, "alice")

        encoded = stats.frames_encoded
        await send_json(alice_ws, {"type": "chat.message", "text": "hello"})
        for websocket in (*listeners, alice_ws, alice_tab):
            assert (await receive_type(websocket, "chat.message"))["text"] == "hello"
        assert stats.frames_encoded == encoded + 1

        await send_json(alice_ws, {"type": "chat.typing"})
        for listener in listeners:
            assert (await receive_type(listener, "chat.typing"))["user"] == "alice"
        assert stats.frames_encoded == encoded + 2
        await assert_silent(alice_tab, "chat.typing")

        # A newcomer, alone in its tick: one `presence.join` for the room, and one `presence.state` for the
        # newcomer alone.
        bob = await stack.enter_async_context(connect_ws(url, await token_for(auth_headers, "bob")))
        assert (await receive_type(bob, "presence.state"))["users"][0] == "alice"
        for websocket in (*listeners, alice_ws, alice_tab):
            await joined(websocket, "bob")
        assert stats.frames_encoded == encoded + 4
        await assert_silent(bob, "presence.join")
