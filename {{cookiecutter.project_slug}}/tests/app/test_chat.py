"""The chat WebSocket over a real server: auth, messages, replay and healing by seq, typing, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from websockets.asyncio.client import ClientConnection

from {{ cookiecutter.package_name }}.consumers.chat import ChatMessagePublic, room_group
from {{ cookiecutter.package_name }}.db import messages, rooms, users
from {{ cookiecutter.package_name }}.db.models import Message
from {{ cookiecutter.package_name }}.realtime import RecoveryOptions
from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import wait_until
from .support import AuthHeaders
from .test_auth import forged_tokens
from .ws_support import (
    BROKERS,
    PLACES,
    Lobby,
    TokenPlace,
    assert_silent,
    close_code,
    connect_ws,
    create_room,
    receive_json,
    receive_type,
    send_json,
    token_for,
)


@asynccontextmanager
async def both_in(lobby: Lobby) -> AsyncIterator[tuple[ClientConnection, ClientConnection]]:
    """Alice's and Bob's sockets in the lobby, once Bob has its presence state: both are members."""
    async with connect_ws(lobby.url, lobby.alice) as alice_ws, connect_ws(lobby.url, lobby.bob) as bob_ws:
        await receive_type(bob_ws, "presence.state")
        yield alice_ws, bob_ws


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_a_message_is_stored_then_sent_with_its_id_to_everyone_in_the_room(
    client: AsyncClient, lobby: Lobby
) -> None:
    async with both_in(lobby) as (alice_ws, bob_ws):
        await send_json(alice_ws, {"type": "chat.message", "text": "  Hello, Bob  "})
        echo = await receive_type(alice_ws, "chat.message")
        assert await receive_type(bob_ws, "chat.message") == echo

    history = await client.get("/rooms/lobby/messages", headers={"Authorization": f"Bearer {lobby.bob}"})
    [stored] = history.json()
    assert echo == {"type": "chat.message", **stored}
    assert (echo["user"], echo["room"], echo["text"]) == ("alice", "lobby", "Hello, Bob")
    assert echo["created_at"].endswith("Z")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("place", PLACES)
async def test_the_token_is_taken_from_the_header_the_query_or_the_subprotocol(
    place: TokenPlace, lobby: Lobby
) -> None:
    alice = lobby.alice
    async with connect_ws(lobby.url, alice, place=place) as websocket:
        assert await receive_json(websocket) == {"type": "presence.state", "users": ["alice"]}
        assert websocket.subprotocol == ("bearer" if place == "subprotocol" else None)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_missing_forged_and_stale_tokens_are_closed_with_1008(
    client: AsyncClient, settings: Settings, lobby: Lobby
) -> None:
    alice = lobby.alice
    me = await client.get("/users/me", headers={"Authorization": f"Bearer {alice}"})
    attacks = forged_tokens(settings.secret_key.get_secret_value(), me.json()["id"])
    async with connect_ws(lobby.url) as anonymous:
        assert await close_code(anonymous) == 1008
    for attack, token in attacks.items():
        for place in PLACES:
            async with connect_ws(lobby.url, token, place=place) as websocket:
                assert await close_code(websocket) == 1008, (attack, place)


async def test_a_private_room_closes_with_1008_for_anyone_but_its_members(
    client: AsyncClient, auth_headers: AuthHeaders, ws_url: str
) -> None:
    alice, bob = await token_for(auth_headers, "alice"), await token_for(auth_headers, "bob")
    await create_room(client, alice, "secret", private=True)
    for room in ("secret", "no-such-room"):
        async with connect_ws(f"{ws_url}/ws/rooms/{room}", bob) as websocket:
            assert await close_code(websocket) == 1008
    added = await client.post(
        "/rooms/secret/members", json={"username": "bob"}, headers={"Authorization": f"Bearer {alice}"}
    )
    assert added.status_code == 201
    async with connect_ws(f"{ws_url}/ws/rooms/secret", bob) as websocket:
        assert (await receive_json(websocket))["type"] == "presence.state"


async def message_ids(session_factory: async_sessionmaker[AsyncSession]) -> list[int]:
    async with session_factory() as session:
        return sorted((await session.scalars(select(Message.id))).all())


async def has_messages(session_factory: async_sessionmaker[AsyncSession], count: int) -> bool:
    return len(await message_ids(session_factory)) >= count


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_since_replays_the_history_then_live_messages_without_gap_or_duplicate(
    client: AsyncClient,
    auth_headers: AuthHeaders,
    settings: Settings,
    ws_url: str,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Two writers keep sending while a reader joins with `since`: it gets every later id exactly once."""
    settings.ws_rate_limit_per_second = 1000.0  # read by each new connection
    alice, bob, carol = [await token_for(auth_headers, name) for name in ("alice", "bob", "carol")]
    await create_room(client, alice, "lobby")
    url, per_writer, before_reader = f"{ws_url}/ws/rooms/lobby", 40, 10
    reader_joined = asyncio.Event()

    async def write(token: str) -> None:
        async with connect_ws(url, token) as websocket:
            for number in range(per_writer):
                if number == before_reader:
                    await reader_joined.wait()
                text = f"message {number} from {token}"
                await send_json(websocket, {"type": "chat.message", "text": text})
                while (await receive_type(websocket, "chat.message"))["text"] != text:
                    pass

    writers = [asyncio.create_task(write(token)) for token in (alice, bob)]
    async with asyncio.timeout(20):
        await wait_until(lambda: has_messages(session_factory, before_reader))
        since = before_reader // 2
        async with connect_ws(url, carol, since=since) as reader:
            reader_joined.set()
            await asyncio.gather(*writers)
            expected = list(range(since + 1, len(await message_ids(session_factory)) + 1))
            received: list[int] = []
            while len(received) < len(expected):
                received.append((await receive_type(reader, "chat.message"))["seq"])
            await assert_silent(reader, "chat.message")
    assert received == expected, "a message was missed, sent twice or out of order"
    assert len(expected) == 2 * per_writer - since


async def store_unpublished(
    session_factory: async_sessionmaker[AsyncSession], room_name: str, author: str, text: str
) -> ChatMessagePublic:
    """Store a message as the consumer does, without publishing it: as if the publish was lost."""
    async with session_factory() as session:
        room = await rooms.get_room(session, name=room_name)
        user = await users.get_user_by_username(session, username=author)
        assert room is not None
        assert user is not None
        return ChatMessagePublic.model_validate(
            await messages.create_message(session, room=room, user=user, text=text)
        )


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_a_gap_in_the_live_seqs_is_filled_from_the_history_in_order(
    app: FastAPI, session_factory: async_sessionmaker[AsyncSession], lobby: Lobby
) -> None:
    alice = lobby.alice
    async with connect_ws(lobby.url, alice) as websocket:
        await receive_type(websocket, "presence.state")
        await store_unpublished(session_factory, "lobby", "alice", "lost")
        published = await store_unpublished(session_factory, "lobby", "alice", "published")
        await app.state.manager.group_send(room_group("lobby"), published)
        await app.state.manager.group_send(room_group("lobby"), published)  # a duplicate is dropped
        frames = [await receive_type(websocket, "chat.message") for _ in range(2)]
        assert [(frame["seq"], frame["text"]) for frame in frames] == [(1, "lost"), (2, "published")]
        await assert_silent(websocket, "chat.message")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_last_message_never_published_reaches_a_quiet_room(
    lobby: Lobby, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    """No later message reveals the gap: the periodic check of the room's head does."""
    async with connect_ws(lobby.url, lobby.bob) as websocket:
        await receive_type(websocket, "presence.state")
        lost = await store_unpublished(session_factory, "lobby", "alice", "never published")
        async with asyncio.timeout(15):
            frame = await receive_type(websocket, "chat.message")
        assert frame == lost.model_dump(mode="json")
        await assert_silent(websocket, "chat.message")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_replay_beyond_the_limit_is_truncated_to_the_most_recent(app: FastAPI, lobby: Lobby) -> None:
    app.state.manager.recovery.options = RecoveryOptions(max_replay=2)
    alice = lobby.alice
    async with connect_ws(lobby.url, alice) as websocket:
        for number in range(5):
            await send_json(websocket, {"type": "chat.message", "text": f"message {number}"})
            await receive_type(websocket, "chat.message")
    async with connect_ws(lobby.url, alice, since=1) as websocket:
        frames = [await receive_json(websocket) for _ in range(4)]
    assert frames[0] == {"type": "history.truncated", "oldest_seq": 4}
    assert [frame.get("seq") for frame in frames[1:3]] == [4, 5]
    assert frames[3]["type"] == "presence.state"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_since_id_resumes_a_client_that_kept_a_message_id(
    client: AsyncClient, ws_url: str, lobby: Lobby
) -> None:
    alice = lobby.alice
    await create_room(client, alice, "other")
    sent = []
    for room in ("lobby", "other", "lobby", "lobby"):
        async with connect_ws(f"{ws_url}/ws/rooms/{room}", alice) as websocket:
            await send_json(websocket, {"type": "chat.message", "text": room})
            sent.append(await receive_type(websocket, "chat.message"))
    async with connect_ws(lobby.url, alice, since_id=sent[1]["id"]) as websocket:
        frames = [await receive_json(websocket) for _ in range(3)]
    assert [(frame.get("id"), frame.get("seq")) for frame in frames[:2]] == [
        (sent[2]["id"], 2),
        (sent[3]["id"], 3),
    ]
    assert frames[2]["type"] == "presence.state"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_since_zero_replays_everything_in_order_before_the_presence(lobby: Lobby) -> None:
    alice = lobby.alice
    async with connect_ws(lobby.url, alice) as websocket:
        for number in range(3):
            await send_json(websocket, {"type": "chat.message", "text": f"message {number}"})
            await receive_type(websocket, "chat.message")
    async with connect_ws(lobby.url, alice, since=0) as websocket:
        frames = [await receive_json(websocket) for _ in range(4)]
    assert [frame.get("text") for frame in frames] == ["message 0", "message 1", "message 2", None]
    assert frames[-1] == {"type": "presence.state", "users": ["alice"]}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("since", ["-1", "abc", "1.5", str(2**63)])
async def test_a_since_that_is_not_a_seq_closes_with_1008(since: str, lobby: Lobby) -> None:
    alice = lobby.alice
    async with connect_ws(lobby.url, alice, since=since) as websocket:
        assert await close_code(websocket) == 1008


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_typing_is_relayed_to_the_others_and_not_stored(client: AsyncClient, lobby: Lobby) -> None:
    async with both_in(lobby) as (alice_ws, bob_ws):
        await send_json(alice_ws, {"type": "chat.typing"})
        typing = await receive_type(bob_ws, "chat.typing")
        assert typing == {"type": "chat.typing", "user": "alice", "room": "lobby"}
        await assert_silent(alice_ws, "chat.typing")
    history = await client.get("/rooms/lobby/messages", headers={"Authorization": f"Bearer {lobby.bob}"})
    assert history.json() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_bad_frames_are_answered_with_errors_and_the_connection_stays_open(lobby: Lobby) -> None:
    alice = lobby.alice
    async with connect_ws(lobby.url, alice) as websocket:
        await receive_type(websocket, "presence.state")
        for frame, code in [
            ("{not json", "invalid_json"),
            (b"\x01binary", "invalid_message"),
            ('["a", "list"]', "invalid_message"),
            ('{"text": "no type"}', "invalid_message"),
            ('{"type": "chat.shout", "text": "hi"}', "unknown_type"),
            ('{"type": "chat.message"}', "invalid_message"),
            ('{"type": "chat.message", "text": 42}', "invalid_message"),
            ('{"type": "chat.message", "text": "   "}', "invalid_message"),
            (json.dumps({"type": "chat.message", "text": "x" * 4001}), "invalid_message"),
        ]:
            await websocket.send(frame)
            error = await receive_json(websocket)
            assert (error["type"], error["code"]) == ("error", code), frame
            assert error["detail"]
        await send_json(websocket, {"type": "chat.message", "text": "x" * 4000})
        assert len((await receive_type(websocket, "chat.message"))["text"]) == 4000


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_oversized_frame_is_answered_too_large_and_closed_with_1009(
    settings: Settings, lobby: Lobby
) -> None:
    alice = lobby.alice
    async with connect_ws(lobby.url, alice) as websocket:
        await receive_type(websocket, "presence.state")
        await send_json(websocket, {"type": "chat.message", "text": "x" * settings.ws_max_message_bytes})
        assert (await receive_type(websocket, "error"))["code"] == "too_large"
        assert await close_code(websocket) == 1009


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_frames_over_the_rate_limit_are_refused_then_the_connection_is_closed_with_1008(
    settings: Settings, lobby: Lobby
) -> None:
    settings.ws_rate_limit_burst, settings.ws_rate_limit_per_second = 5, 0.1  # read by each new connection
    async with both_in(lobby) as (alice_ws, bob_ws):
        for _ in range(5):
            await send_json(alice_ws, {"type": "chat.typing"})
            await receive_type(bob_ws, "chat.typing")
        for _ in range(5):
            await send_json(alice_ws, {"type": "chat.typing"})
            assert (await receive_type(alice_ws, "error"))["code"] == "rate_limited"
        await assert_silent(bob_ws, "chat.typing")
        await send_json(alice_ws, {"type": "chat.typing"})
        assert (await receive_type(alice_ws, "error"))["code"] == "rate_limited"
        assert await close_code(alice_ws) == 1008
        assert await receive_type(bob_ws, "presence.leave") == {"type": "presence.leave", "user": "alice"}
