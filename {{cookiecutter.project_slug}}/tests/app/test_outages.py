"""The database or the broker going away under a chat, through relays the test cuts: nothing stored is lost.

A message that cannot be stored is refused with `unavailable`; one stored while the broker is down is echoed
to its sender at once and held, then published once the broker is back, to every other connection of the
room, the sender's other tabs included, but not again to the connection that sent it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.consumers.chat import room_group
from {{ cookiecutter.package_name }}.consumers.unsent import UnsentMessages
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


async def unsent_metrics(http: AsyncClient) -> dict[str, float]:
    """The `chat_unsent_*` samples of `/metrics`, by name."""
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    samples = (line.partition(" ") for line in response.text.splitlines() if line.startswith("chat_unsent_"))
    return {name: float(value) for name, _, value in samples}


async def test_a_message_not_stored_is_refused_and_one_stored_while_the_broker_is_down_is_held_then_sent(
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
                held.append(await receive_type(sender, "chat.message"))  # at once, the broker still down
            assert [echo["text"] for echo in held] == ["held 1", "held 2"]
            assert not manager.ready
            assert await unsent_metrics(http) == {
                "chat_unsent_messages": 2,
                "chat_unsent_published_total": 0,
                "chat_unsent_dropped_total": 0,
            }
            await assert_silent(bob_ws, "chat.message")

            broker_relay.restore()
            await wait_until(ready_again, within=15)
            for websocket in (bob_ws, other_tab):
                assert [await receive_type(websocket, "chat.message") for _ in held] == held
            await send_json(sender, {"type": "chat.message", "text": "after"})
            assert (await receive_type(sender, "chat.message"))["text"] == "after"  # not the held ones again
            assert (await receive_type(bob_ws, "chat.message"))["text"] == "after"
            await assert_silent(sender, "chat.message")
            assert await unsent_metrics(http) == {
                "chat_unsent_messages": 0,
                "chat_unsent_published_total": 2,
                "chat_unsent_dropped_total": 0,
            }
        assert await history(http, alice) == ["held 1", "held 2", "after"]


async def test_held_messages_go_out_oldest_first_and_past_the_limit_the_oldest_is_dropped(
    relayed_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    unsent = UnsentMessages(relayed_app.state.manager, limit=2)
    async with (
        AsyncClient(transport=ASGITransport(app=relayed_app), base_url="http://test") as http,
        serve_in_loop(relayed_app, lifespan="off") as base_url,
    ):
        bob = await log_in(http, "bob")
        await create_room(http, bob, "lobby")
        async with connect_ws(f"{base_url.replace('http', 'ws', 1)}/ws/rooms/lobby", bob) as websocket:
            await receive_type(websocket, "presence.state")
            for message_id in (3, 1, 2):
                unsent.hold(room_group("lobby"), message_id, {"type": "chat.message", "id": message_id})
            assert (len(unsent), unsent.dropped) == (2, 1)
            assert "dropped the oldest, 1 to 'room:lobby'" in caplog.text
            async with unsent:
                assert [(await receive_type(websocket, "chat.message"))["id"] for _ in range(2)] == [2, 3]
                await assert_silent(websocket, "chat.message")
    assert (len(unsent), unsent.published, unsent.dropped) == (0, 2, 1)
