"""Message history: stored messages numbered 1, 2, 3... per room, read back by seq a page at a time."""

from __future__ import annotations

import asyncio

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from {{ cookiecutter.package_name }}.db import messages, rooms
from {{ cookiecutter.package_name }}.db.models import User

from .support import AuthHeaders


async def post_messages(
    session_factory: async_sessionmaker[AsyncSession], *, room: str, username: str, texts: list[str]
) -> list[int]:
    """Store messages as the chat consumer does; their seqs."""
    async with session_factory() as session:
        found_room = await rooms.get_room(session, name=room)
        user = await session.scalar(select(User).where(User.username == username))
        assert found_room is not None
        assert user is not None
        return [
            (await messages.create_message(session, room=found_room, user=user, text=text)).seq
            for text in texts
        ]


@pytest.fixture
async def lobby(client: AsyncClient, auth_headers: AuthHeaders) -> dict[str, str]:
    """alice's headers, once she has created the public room `lobby`."""
    alice = await auth_headers("alice")
    await client.post("/rooms", json={"name": "lobby", "title": "The lobby"}, headers=alice)
    return alice


async def history(client: AsyncClient, headers: dict[str, str], **params: int) -> list[str]:
    response = await client.get("/rooms/lobby/messages", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [message["text"] for message in response.json()]


async def test_history_pages_forward_and_backward(
    client: AsyncClient, lobby: dict[str, str], session_factory: async_sessionmaker[AsyncSession]
) -> None:
    texts = [f"message {number}" for number in range(7)]
    ids = await post_messages(session_factory, room="lobby", username="alice", texts=texts)
    assert ids == list(range(1, 8))

    assert await history(client, lobby) == texts
    assert await history(client, lobby, limit=3) == texts[4:]
    assert await history(client, lobby, before=ids[4], limit=2) == texts[2:4]
    assert await history(client, lobby, after=ids[1], limit=2) == texts[2:4]
    assert await history(client, lobby, after=ids[1], before=ids[5]) == texts[2:5]
    assert await history(client, lobby, after=ids[-1]) == []


async def test_ids_past_the_largest_bigint_are_refused_with_422_not_a_server_error(
    client: AsyncClient, lobby: dict[str, str]
) -> None:
    largest = 2**63 - 1
    assert await history(client, lobby, after=largest) == []
    assert await history(client, lobby, before=largest) == []
    for bound in ("after", "before"):
        response = await client.get("/rooms/lobby/messages", params={bound: largest + 1}, headers=lobby)
        assert response.status_code == 422, response.text


async def test_history_messages_carry_their_room_author_and_utc_time(
    client: AsyncClient, lobby: dict[str, str], session_factory: async_sessionmaker[AsyncSession]
) -> None:
    [message_id] = await post_messages(session_factory, room="lobby", username="alice", texts=["hello"])
    [message] = (await client.get("/rooms/lobby/messages", headers=lobby)).json()
    assert message["id"] == message_id
    assert (message["room"], message["user"], message["text"]) == ("lobby", "alice", "hello")
    assert message["created_at"].endswith("Z")


async def test_history_holds_only_the_rooms_own_messages(
    client: AsyncClient, lobby: dict[str, str], session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await client.post("/rooms", json={"name": "kitchen", "title": "Kitchen"}, headers=lobby)
    await post_messages(session_factory, room="kitchen", username="alice", texts=["elsewhere"])
    await post_messages(session_factory, room="lobby", username="alice", texts=["here"])
    assert await history(client, lobby) == ["here"]


async def test_replay_reads_every_message_after_a_seq(
    lobby: dict[str, str], session_factory: async_sessionmaker[AsyncSession]
) -> None:
    ids = await post_messages(
        session_factory, room="lobby", username="alice", texts=[str(n) for n in range(30)]
    )
    async with session_factory() as session:
        room = await rooms.get_room(session, name="lobby")
        assert room is not None
        replayed = await messages.list_messages(session, room=room, after=ids[9])
    assert [message.seq for message in replayed] == ids[10:]


async def test_concurrent_sessions_store_messages_for_the_same_room_and_user_objects(
    lobby: dict[str, str], session_factory: async_sessionmaker[AsyncSession]
) -> None:
    async with session_factory() as session:
        room = await rooms.get_room(session, name="lobby")
        user = await session.scalar(select(User).where(User.username == "alice"))
    assert room is not None
    assert user is not None

    async def store(text: str) -> int:
        async with session_factory() as session:
            return (await messages.create_message(session, room=room, user=user, text=text)).seq

    seqs = await asyncio.gather(*(store(str(number)) for number in range(10)))
    assert sorted(seqs) == list(range(1, 11))
    async with session_factory() as session:
        stored = await messages.list_messages(session, room=room)
    assert sorted(message.text for message in stored) == sorted(str(number) for number in range(10))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 101}, "limit"),
        ({"limit": 0}, "limit"),
        ({"after": -1}, "after"),
        ({"before": "x"}, "before"),
    ],
    ids=["limit-above-100", "limit-zero", "negative-after", "non-numeric-before"],
)
async def test_history_parameters_are_validated(
    client: AsyncClient, lobby: dict[str, str], params: dict[str, object], field: str
) -> None:
    response = await client.get("/rooms/lobby/messages", params=params, headers=lobby)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


async def test_private_history_is_hidden_from_non_members(
    client: AsyncClient, auth_headers: AuthHeaders
) -> None:
    alice, bob = await auth_headers("alice"), await auth_headers("bob")
    await client.post("/rooms", json={"name": "secret", "title": "Secret", "is_private": True}, headers=alice)
    assert (await client.get("/rooms/secret/messages", headers=alice)).status_code == 200
    hidden = await client.get("/rooms/secret/messages", headers=bob)
    assert hidden.status_code == 404
    assert hidden.json() == {"detail": "Room 'secret' not found"}
