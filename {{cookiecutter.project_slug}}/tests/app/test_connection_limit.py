"""How many WebSockets a user may have open at once: `WS_MAX_CONNECTIONS_PER_USER`, on every endpoint and
every instance together. One more is closed with 1008 and a reason that says so; closing one frees a slot,
and so does the death of an instance, once its entries have expired."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from websockets.asyncio.client import ClientConnection

from {{ cookiecutter.package_name }}.consumers.base import connections_group
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import serve_in_loop, wait_until
{% if cookiecutter.use_notifications == "y" -%}
from .relay import Relay
{% endif -%}
from .support import create_tables
from .ws_support import (
    BROKERS,
    PLACES,
    Lobby,
    TokenPlace,
    close_code,
    connect_ws,
    create_room,
    log_in,
    receive_type,
    send_json,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

LIMIT = 2
REFUSAL = f"Too many connections: at most {LIMIT} per user"
EXPIRY_SECONDS = 0.5
HEARTBEAT_TTL = 0.6  # WS_PRESENCE_TTL_SECONDS: the heartbeat counts every TTL / 3
ENDPOINTS = [
    "/ws/rooms/lobby",
    {%- if cookiecutter.use_notifications == "y" %}
    "/ws/notifications",
    {%- endif %}
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"ws_max_connections_per_user": LIMIT})


async def admitted(websocket: ClientConnection, url: str) -> None:
    """Wait until the connection is set up, which it is only once counted: the room's presence, or an
    answer to a first frame."""
    if "/ws/rooms/" in url:
        await receive_type(websocket, "presence.state")
    else:
        await send_json(websocket, {"type": "subscribe", "topic": "limits/feed"})
        await receive_type(websocket, "subscribed")


@asynccontextmanager
async def opened(url: str, token: str, place: TokenPlace = "header") -> AsyncIterator[ClientConnection]:
    async with connect_ws(url, token, place=place) as websocket:
        await admitted(websocket, url)
        yield websocket


async def refusal(url: str, token: str, place: TokenPlace = "header") -> tuple[int | None, str]:
    """How the server closes a connection to `url`: its code and reason."""
    async with connect_ws(url, token, place=place) as websocket:
        code = await close_code(websocket)
        return code, websocket.close_reason or ""


async def counted(app: FastAPI, username: str, expected: int) -> None:
    """Wait until `username` has `expected` connections counted, as every instance sees it."""

    async def holds() -> bool:
        members = await app.state.manager.presence_members(connections_group(username))
        return len(members) == expected

    await wait_until(holds, within=5)


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_a_connection_over_the_limit_is_closed_with_1008_and_closing_one_frees_a_slot(
    app: FastAPI, ws_url: str, lobby: Lobby
) -> None:
    alice, bob = lobby.alice, lobby.bob
    urls = [f"{ws_url}{endpoint}" for endpoint in ENDPOINTS]
    room = urls[0]
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(opened(room, alice))
        await stack.enter_async_context(opened(urls[-1], alice, place="query"))
        await counted(app, "alice", LIMIT)
        for url in urls:
            for place in PLACES:
                assert await refusal(url, alice, place=place) == (1008, REFUSAL)
        await counted(app, "alice", LIMIT)  # a refused connection leaves no entry

        # Others are not limited by alice's connections, and hers still work.
        async with opened(room, bob) as bob_ws:
            await send_json(first, {"type": "chat.message", "text": "still here"})
            assert (await receive_type(bob_ws, "chat.message"))["text"] == "still here"
            assert (await receive_type(first, "chat.message"))["text"] == "still here"

        await first.close()
        await counted(app, "alice", LIMIT - 1)
        async with opened(room, alice):
            assert await refusal(urls[-1], alice) == (1008, REFUSAL)
    await counted(app, "alice", 0)


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_the_connections_of_an_instance_that_died_count_until_their_entries_expire(
    app: FastAPI, settings: Settings, lobby: Lobby
) -> None:
    alice, room = lobby.alice, lobby.url
    # Entries as another instance writes them, which it stopped refreshing: it died.
    key = f"{settings.broker_channel}:presence:{connections_group('alice')}"
    dead = {f"dead{number}": f"dead{number}" for number in range(LIMIT)}
    await app.state.manager.broker.presence_update(key, add=dead, ttl=EXPIRY_SECONDS)
    assert await refusal(room, alice) == (1008, REFUSAL)
    await counted(app, "alice", 0)
    async with opened(room, alice):
        await counted(app, "alice", 1)


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
async def test_the_limit_counts_the_connections_on_every_instance(settings: Settings) -> None:
    await create_tables(settings.database_url)
    first_app, second_app = create_app(settings), create_app(settings)
    async with (
        LifespanManager(first_app),
        LifespanManager(second_app),
        AsyncClient(transport=ASGITransport(app=first_app), base_url="http://test") as http,
        serve_in_loop(first_app, lifespan="off") as first_url,
        serve_in_loop(second_app, lifespan="off") as second_url,
    ):
        alice = await log_in(http, "alice")
        await create_room(http, alice, "lobby")
        on_first, on_second = [
            f"{url.replace('http', 'ws', 1)}/ws/rooms/lobby" for url in (first_url, second_url)
        ]
        async with opened(on_first, alice) as first, opened(on_second, alice):
            assert await refusal(on_first, alice) == (1008, REFUSAL)
            assert await refusal(on_second, alice) == (1008, REFUSAL)
            await first.close()
            await counted(second_app, "alice", LIMIT - 1)
            async with opened(on_second, alice):
                await counted(first_app, "alice", LIMIT)
        await counted(first_app, "alice", 0)
{%- if cookiecutter.use_notifications == "y" %}


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
async def test_while_the_broker_is_down_a_connection_is_admitted_uncounted_then_counted_once_it_is_back(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await create_tables(settings.database_url)
    async with Relay.before(settings.broker_url) as relay:
        relayed = settings.model_copy(
            update={"broker_url": relay.url(settings.broker_url), "ws_presence_ttl_seconds": HEARTBEAT_TTL}
        )
        app = create_app(relayed)
        async with (
            LifespanManager(app),
            AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as http,
            serve_in_loop(app, lifespan="off") as base_url,
        ):
            alice = await log_in(http, "alice")
            url = f"{base_url.replace('http', 'ws', 1)}/ws/notifications"
            async with opened(url, alice):
                relay.cut()

                async def admitted_uncounted() -> bool:
                    return any("uncounted" in record.getMessage() for record in caplog.records)

                with caplog.at_level("WARNING"):
                    async with connect_ws(url, alice) as uncounted:
                        await wait_until(admitted_uncounted, within=5)
                        relay.restore()
                        await admitted(uncounted, url)  # its subscriptions wait for the broker
                        await counted(app, "alice", LIMIT)  # by the heartbeat
                        assert await refusal(url, alice) == (1008, REFUSAL)
{%- endif %}
