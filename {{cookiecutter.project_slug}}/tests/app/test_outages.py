"""The database or the broker going away under a chat, through relays the test cuts: nothing stored is lost.

A message that cannot be stored is refused with `unavailable`; one stored while the broker is down reaches
every connection of the room from the history (the room is a recoverable group), once each, the sender's
included, and never again once the broker is back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import serve_in_loop, wait_until
from .relay import Relay
from .support import create_tables
from .ws_support import assert_silent, connect_ws, create_room, log_in, receive_type, send_json

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


async def test_a_message_not_stored_is_refused_and_one_stored_while_the_broker_is_down_reaches_the_room(
    relayed_app: FastAPI, database_relay: Relay, broker_relay: Relay
) -> None:
    manager = relayed_app.state.manager

    async def broker_down() -> bool:
        return not manager.ready

    async def ready_again() -> bool:
        return bool(manager.ready)

    async with (
        AsyncClient(transport=ASGITransport(app=relayed_app), base_url="http://test") as http,
        serve_in_loop(relayed_app, lifespan="off") as base_url,
    ):
        alice, bob = await log_in(http, "alice"), await log_in(http, "bob")
        await create_room(http, alice, "lobby")
        url = f"{base_url.replace('http', 'ws', 1)}/ws/rooms/lobby"
        async with (
            connect_ws(url, alice) as sender,
            connect_ws(url, alice, since=0) as other_tab,
            connect_ws(url, bob) as bob_ws,
        ):
            for websocket in (sender, other_tab, bob_ws):
                await receive_type(websocket, "presence.state")

            database_relay.cut()
            await send_json(sender, {"type": "chat.message", "text": "not stored"})
            error = await receive_type(sender, "error")
            assert error["code"] == "unavailable"
            assert "could not be stored" in error["detail"]
            database_relay.restore()

            broker_relay.cut()
            await wait_until(broker_down)
            held = []
            for text in ("held 1", "held 2"):
                await send_json(sender, {"type": "chat.message", "text": text})
                held.append(await receive_type(sender, "chat.message"))  # from the history, the broker down
            assert [echo["text"] for echo in held] == ["held 1", "held 2"]
            assert not manager.ready
            for websocket in (bob_ws, other_tab):  # healed from the history by the instance's next check
                assert [await receive_type(websocket, "chat.message") for _ in held] == held

            broker_relay.restore()
            await wait_until(ready_again, within=15)
            await send_json(sender, {"type": "chat.message", "text": "after"})
            for websocket in (sender, other_tab, bob_ws):  # not the held ones again
                assert (await receive_type(websocket, "chat.message"))["text"] == "after"
            await assert_silent(sender, "chat.message")
        assert await history(http, alice) == ["held 1", "held 2", "after"]
