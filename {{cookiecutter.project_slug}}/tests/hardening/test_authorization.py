"""A signed-in user reaching for what is not theirs, on a real process: a private room they are not a member
of, words put in someone else's mouth or room, another user's notification topics, another user's
connections. Each attempt is refused, and the user it aimed at receives nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from ..app.ws_support import (
    PLACES,
    TokenPlace,
    assert_silent,
    close_code,
    connect_ws,
    receive_json,
    receive_type,
    send_json,
)
from ..processes import ProcessGroup
from .support import Instance, create_room, start_sqlite_instance

pytestmark = pytest.mark.slow


async def assert_nothing_arrives(websocket: ClientConnection) -> None:
    with pytest.raises(TimeoutError):
        await receive_json(websocket, within=0.5)


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """alice owns the public `lobby` and the private `secret`, where carol is a member and bob is not."""
    directory = tmp_path_factory.mktemp("authorization")
    with ProcessGroup(directory) as group:
        instance = start_sqlite_instance(
            group,
            directory,
            "guarded",
            users=["alice", "bob", "carol"],
            {%- if cookiecutter.use_notifications == "y" %}
            notifications_client_publish="true",
            {%- endif %}
        )
        with httpx.Client(base_url=instance.base_url, headers=instance.headers("alice"), timeout=10) as http:
            create_room(http, instance.tokens["alice"], "lobby")
            create_room(http, instance.tokens["alice"], "secret", private=True)
            assert http.post("/rooms/secret/members", json={"username": "carol"}).status_code == 201
        yield instance


@pytest.mark.parametrize("place", PLACES)
async def test_a_non_member_cannot_join_a_private_room(instance: Instance, place: TokenPlace) -> None:
    url = instance.ws("/ws/rooms/secret")
    for query in ({}, {"since": 0}):
        async with connect_ws(url, instance.tokens["bob"], place=place, **query) as websocket:
            assert await close_code(websocket) == 1008
    async with connect_ws(url, instance.tokens["carol"], place=place) as websocket:
        assert await receive_json(websocket) == {"type": "presence.state", "users": ["carol"]}


async def test_a_non_member_can_neither_read_a_private_room_nor_let_himself_in(instance: Instance) -> None:
    async with httpx.AsyncClient(base_url=instance.base_url, headers=instance.headers("bob")) as http:
        assert (await http.get("/rooms/secret")).status_code == 404
        assert (await http.get("/rooms/secret/messages")).status_code == 404
        assert (await http.post("/rooms/secret/members", json={"username": "bob"})).status_code == 404
        assert "secret" not in {room["name"] for room in (await http.get("/rooms")).json()}


async def test_a_chat_message_cannot_speak_for_someone_else_nor_into_another_room(instance: Instance) -> None:
    async with (
        connect_ws(instance.ws("/ws/rooms/secret"), instance.tokens["carol"]) as carol,
        connect_ws(instance.ws("/ws/rooms/lobby"), instance.tokens["bob"]) as bob,
    ):
        await receive_type(carol, "presence.state")
        await receive_type(bob, "presence.state")
        spoof = {"type": "chat.message", "text": "trust me", "user": "alice", "room": "secret", "id": 999}
        await send_json(bob, spoof)
        echo = await receive_type(bob, "chat.message")
        assert (echo["user"], echo["room"], echo["text"]) == ("bob", "lobby", "trust me")
        assert echo["id"] != 999
        await assert_silent(carol, "chat.message")
    async with httpx.AsyncClient(base_url=instance.base_url, headers=instance.headers("alice")) as http:
        assert (await http.get("/rooms/secret/messages")).json() == []
{%- if cookiecutter.use_notifications == "y" %}


async def test_another_users_notifications_cannot_be_subscribed_to(instance: Instance) -> None:
    url = instance.ws("/ws/notifications")
    async with (
        connect_ws(url, instance.tokens["alice"]) as alice,
        connect_ws(url, instance.tokens["bob"]) as bob,
    ):
        for topic_filter in [
            "users/bob/notifications",
            "users/bob/#",
            "users/+/notifications",
            "users/#",
            "+/bob/notifications",
            "+/+/+",
            "#",
        ]:
            await send_json(alice, {"type": "subscribe", "topic": topic_filter})
            assert (await receive_type(alice, "error"))["code"] == "forbidden", topic_filter
        async with httpx.AsyncClient(base_url=instance.base_url, headers=instance.headers("root")) as http:
            response = await http.post("/notifications", json={"username": "bob", "data": "for bob only"})
            assert response.status_code == 202
        assert (await receive_type(bob, "notification"))["data"] == "for bob only"
        await assert_nothing_arrives(alice)


async def test_another_users_connections_cannot_be_targeted(instance: Instance) -> None:
    url = instance.ws("/ws/notifications")
    async with (
        connect_ws(url, instance.tokens["alice"]) as alice,
        connect_ws(url, instance.tokens["bob"]) as bob,
    ):
        await send_json(bob, {"type": "subscribe", "topic": "news/#"})
        await receive_type(bob, "subscribed")
        async with httpx.AsyncClient(base_url=instance.base_url, headers=instance.headers("bob")) as http:
            me = (await http.get("/users/me")).json()
        for frame, code in [
            ({"type": "send_by_conn_id", "conn_id": "bob", "data": "hi"}, "unknown_type"),
            ({"type": "send_by_conn_id", "conn_id": [str(me["id"]), "bob"], "data": "hi"}, "unknown_type"),
            ({"type": "broadcast", "data": "hi everyone"}, "unknown_type"),
            ({"type": "send", "topic": "users/bob/notifications", "data": "hi"}, "forbidden"),
            ({"type": "send", "topic": "users/+/notifications", "data": "hi"}, "invalid_topic"),
        ]:
            await send_json(alice, frame)
            assert (await receive_type(alice, "error"))["code"] == code, frame
        await assert_nothing_arrives(bob)
        await send_json(alice, {"type": "send", "topic": "news/today", "data": "public"})
        assert await receive_type(bob, "notification") == {
            "type": "notification",
            "topic": "news/today",
            "data": "public",
        }
{%- endif %}
