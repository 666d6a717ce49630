"""Who is in a room: the state on arrival, arrivals and departures, a user with several tabs counted once."""

from __future__ import annotations

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.consumers.chat import room_group
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.realtime import PresenceTicks
from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import serve_in_loop
from .support import AuthHeaders, create_tables
from .ws_support import (
    BROKERS,
    Lobby,
    assert_not_announced,
    connect_ws,
    create_room,
    log_in,
    receive_presence,
    receive_type,
    token_for,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_a_user_arrives_with_their_first_tab_and_leaves_with_their_last(lobby: Lobby) -> None:
    url, alice, bob = lobby.url, lobby.alice, lobby.bob
    async with connect_ws(url, alice) as alice_ws:
        assert await receive_type(alice_ws, "presence.state") == {
            "type": "presence.state",
            "users": ["alice"],
        }
        async with connect_ws(url, bob) as bob_tab:
            assert (await receive_type(bob_tab, "presence.state"))["users"] == ["alice", "bob"]
            arrival = await receive_presence(alice_ws, "bob")
            if arrival["type"] == "presence.diff":
                # Alice's arrival and bob's fell in one tick: its `presence.diff` went to bob too.
                assert arrival == {"type": "presence.diff", "joins": ["alice", "bob"], "leaves": []}
                assert await receive_type(bob_tab, "presence.diff") == arrival
            else:
                assert arrival == {"type": "presence.join", "user": "bob"}
            async with connect_ws(url, bob) as other_bob_tab:
                assert (await receive_type(other_bob_tab, "presence.state"))["users"] == ["alice", "bob"]
            await assert_not_announced(bob_tab, "bob")
            await assert_not_announced(alice_ws, "bob")
        assert await receive_type(alice_ws, "presence.leave") == {"type": "presence.leave", "user": "bob"}


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_the_changes_of_one_tick_go_out_in_one_presence_diff(
    app: FastAPI, client: AsyncClient, auth_headers: AuthHeaders, ws_url: str
) -> None:
    """A room filling up costs one frame per connection and tick; a user's last change in the tick wins."""
    alice = await token_for(auth_headers, "alice")
    await create_room(client, alice, "lobby")
    async with connect_ws(f"{ws_url}/ws/rooms/lobby", alice) as alice_ws:
        await receive_type(alice_ws, "presence.state")
        presence: PresenceTicks = app.state.room_presence
        manager = app.state.manager
        changes = [("carol", True), ("bob", True), ("dave", False), ("erin", True), ("erin", False)]
        for user, present in changes:
            presence.announce(manager, room_group("lobby"), user, present=present)
        diff = await receive_presence(alice_ws, "bob")
        # Alice's own arrival may have fallen in the same tick.
        assert diff["type"] == "presence.diff"
        assert [user for user in diff["joins"] if user != "alice"] == ["bob", "carol"]
        assert diff["leaves"] == ["dave", "erin"]
        await assert_not_announced(alice_ws, "erin")


async def test_presence_is_per_room(client: AsyncClient, ws_url: str, lobby: Lobby) -> None:
    alice, bob = lobby.alice, lobby.bob
    await create_room(client, alice, "kitchen")
    async with connect_ws(lobby.url, alice) as alice_ws:
        await receive_type(alice_ws, "presence.state")
        async with connect_ws(f"{ws_url}/ws/rooms/kitchen", bob) as bob_ws:
            assert (await receive_type(bob_ws, "presence.state"))["users"] == ["bob"]
        await assert_not_announced(alice_ws, "bob")


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_users_of_an_instance_that_stopped_refreshing_are_announced_gone(settings: Settings) -> None:
    """Entries that nobody refreshes any more, as those of an instance that died, expire: the room is told."""
    await create_tables(settings.database_url)
    app = create_app(settings.model_copy(update={"ws_presence_ttl_seconds": 0.6}))
    async with (
        LifespanManager(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as http,
        serve_in_loop(app, lifespan="off") as base_url,
    ):
        alice = await log_in(http, "alice")
        await create_room(http, alice, "lobby")
        key = f"{settings.broker_channel}:presence:{room_group('lobby')}"
        broker = app.state.manager.broker
        await broker.presence_update(key, add={"deadbeef": "ghost"}, ttl=60)
        async with connect_ws(f"{base_url.replace('http', 'ws', 1)}/ws/rooms/lobby", alice) as alice_ws:
            assert (await receive_type(alice_ws, "presence.state"))["users"] == ["alice", "ghost"]
            await broker.presence_update(key, add={"deadbeef": "ghost"}, ttl=0.1)  # its last refresh
            await receive_presence(alice_ws, "ghost", present=False, within=10)
            await assert_not_announced(alice_ws, "ghost", within=0.5)
