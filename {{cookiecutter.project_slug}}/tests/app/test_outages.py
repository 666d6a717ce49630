"""The database or the broker going away under a chat: messages are refused with `unavailable`, never lost."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings
from processes import serve_in_loop, wait_until

from .relay import Relay
from .support import create_tables
from .ws_support import connect_ws, create_room, log_in, receive_type, send_json

pytestmark = [
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
    pytest.mark.parametrize("broker_url", ["redis"], indirect=True),
]


@pytest.fixture
async def database_relay(settings: Settings) -> AsyncIterator[Relay]:
    async with Relay.before(settings.database_url) as relay:
        yield relay


@pytest.fixture
async def broker_relay(settings: Settings) -> AsyncIterator[Relay]:
    async with Relay.before(settings.broker_url) as relay:
        yield relay


@pytest.fixture
async def relayed_app(
    settings: Settings, database_relay: Relay, broker_relay: Relay
) -> AsyncIterator[FastAPI]:
    """The app, reaching PostgreSQL and Redis through relays that the test can cut."""
    await create_tables(settings.database_url)
    relayed = settings.model_copy(
        update={
            "database_url": database_relay.url(settings.database_url),
            "broker_url": broker_relay.url(settings.broker_url),
        }
    )
    app = create_app(relayed)
    async with LifespanManager(app):
        yield app


async def history(http: AsyncClient, token: str) -> list[str]:
    response = await http.get("/rooms/lobby/messages", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return [message["text"] for message in response.json()]


async def test_a_message_is_refused_while_the_database_or_the_broker_is_down_and_none_is_lost(
    relayed_app: FastAPI, database_relay: Relay, broker_relay: Relay
) -> None:
    manager = relayed_app.state.manager

    async def listening_again() -> bool:
        return bool(manager.ready)

    async with (
        AsyncClient(transport=ASGITransport(app=relayed_app), base_url="http://test") as http,
        serve_in_loop(relayed_app, lifespan="off") as base_url,
    ):
        alice = await log_in(http, "alice")
        await create_room(http, alice, "lobby")
        async with connect_ws(f"{base_url.replace('http', 'ws', 1)}/ws/rooms/lobby", alice) as websocket:
            await receive_type(websocket, "presence.state")

            database_relay.cut()
            await send_json(websocket, {"type": "chat.message", "text": "not stored"})
            error = await receive_type(websocket, "error")
            assert error["code"] == "unavailable"
            assert "could not be stored" in error["detail"]
            database_relay.restore()

            broker_relay.cut()
            await send_json(websocket, {"type": "chat.message", "text": "stored, not sent"})
            error = await receive_type(websocket, "error")
            assert error["code"] == "unavailable"
            assert "stored" in error["detail"]
            broker_relay.restore()
            await wait_until(listening_again, within=15)

            await send_json(websocket, {"type": "chat.message", "text": "after"})
            assert (await receive_type(websocket, "chat.message"))["text"] == "after"
        assert await history(http, alice) == ["stored, not sent", "after"]
