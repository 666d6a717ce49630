"""The limits of a real process with its default settings: frame size, frame rate, connections per user.

A frame over `WS_MAX_MESSAGE_BYTES` is closed with 1009 by the server itself, which stops reading it there
(its `ws_max_size` is that setting), and so is a 16 MiB one. A client that floods gets `rate_limited`
for the frames over its budget and, if it keeps on, close 1008. The others in the room notice nothing but
the flooder leaving. A user may have 20 connections open at once; one more is closed with 1008, and closing
one lets the next one in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from ..app.ws_support import close_code, connect_ws, receive_json, receive_presence, receive_type, send_json
from ..processes import ProcessGroup
from .support import Instance, create_room, start_sqlite_instance

pytestmark = pytest.mark.slow

MAX_MESSAGE_BYTES = 64 * 1024  # the default of WS_MAX_MESSAGE_BYTES
HUGE_FRAME_BYTES = 16 * 1024 * 1024  # uvicorn's own default limit, which the service lowers
RATE_LIMIT_BURST = 20  # the default of WS_RATE_LIMIT_BURST
FLOOD_FRAMES = 1000
MAX_CONNECTIONS_PER_USER = 20  # the default of WS_MAX_CONNECTIONS_PER_USER
SLOT_FREED_WITHIN = 5.0
ENDPOINTS = [
    "/ws/rooms/lobby",
    {%- if cookiecutter.use_notifications == "y" %}
    "/ws/notifications",
    {%- endif %}
]


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    directory = tmp_path_factory.mktemp("limits")
    with ProcessGroup(directory) as group:
        instance = start_sqlite_instance(group, directory, "limited", users=["alice", "bob", "carol", "dave"])
        with httpx.Client(base_url=instance.base_url, timeout=10) as http:
            create_room(http, instance.tokens["alice"], "lobby")
        yield instance


async def joined(websocket: ClientConnection, endpoint: str) -> None:
    """Wait until the connection is fully set up: the room's presence, or a first subscription."""
    if endpoint.startswith("/ws/rooms/"):
        await receive_type(websocket, "presence.state")
    else:
        await send_json(websocket, {"type": "subscribe", "topic": "limits/feed"})
        await receive_type(websocket, "subscribed")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "frame",
    [
        json.dumps({"type": "chat.message", "text": "x" * MAX_MESSAGE_BYTES}),
        json.dumps({"type": "chat.message", "text": "€" * (MAX_MESSAGE_BYTES // 2)}, ensure_ascii=False),
        b"\x00" * (MAX_MESSAGE_BYTES + 1),
    ],
    ids=["text", "multibyte-text-under-the-limit-in-characters", "binary"],
)
async def test_a_frame_over_the_size_limit_is_closed_with_1009(
    instance: Instance, endpoint: str, frame: str | bytes
) -> None:
    async with connect_ws(instance.ws(endpoint), instance.tokens["alice"]) as websocket:
        await joined(websocket, endpoint)
        await websocket.send(frame)
        assert await close_code(websocket) == 1009


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_huge_frame_is_closed_with_1009(instance: Instance, endpoint: str) -> None:
    async with connect_ws(instance.ws(endpoint), instance.tokens["alice"]) as websocket:
        await joined(websocket, endpoint)
        with contextlib.suppress(ConnectionClosed):  # closed while it still sends
            await websocket.send(b"\x00" * (HUGE_FRAME_BYTES + 1))
        assert await close_code(websocket, within=20) == 1009


async def test_a_connection_more_than_a_user_may_have_is_closed_with_1008_until_one_closes(
    instance: Instance,
) -> None:
    token = instance.tokens["dave"]
    refusal = (1008, f"Too many connections: at most {MAX_CONNECTIONS_PER_USER} per user")
    async with AsyncExitStack() as stack:
        connections = []
        for number in range(MAX_CONNECTIONS_PER_USER):
            endpoint = ENDPOINTS[number % len(ENDPOINTS)]
            websocket = await stack.enter_async_context(connect_ws(instance.ws(endpoint), token))
            await joined(websocket, endpoint)
            connections.append(websocket)
        for endpoint in ENDPOINTS:
            async with connect_ws(instance.ws(endpoint), token) as extra:
                assert (await close_code(extra), extra.close_reason) == refusal
        async with connect_ws(instance.ws("/ws/rooms/lobby"), instance.tokens["carol"]) as other_user:
            await joined(other_user, "/ws/rooms/lobby")

        await connections[0].close()
        closed_at, attempts = time.monotonic(), 0
        while True:  # the server frees the slot once it has seen the close, which takes a moment
            attempts += 1
            async with connect_ws(instance.ws("/ws/rooms/lobby"), token) as next_one:
                try:
                    await joined(next_one, "/ws/rooms/lobby")
                    break
                except ConnectionClosed:
                    assert (next_one.close_code, next_one.close_reason) == refusal
            assert time.monotonic() - closed_at < SLOT_FREED_WITHIN
            await asyncio.sleep(0.05)
    print(
        f"\nconnections per user: {MAX_CONNECTIONS_PER_USER} open, one more closed with 1008 on "
        f"{len(ENDPOINTS)} endpoint(s); after one closed, the next admitted at attempt {attempts}, "
        f"{time.monotonic() - closed_at:.2f} s later"
    )


async def flood(websocket: ClientConnection, frame: str) -> int:
    """Send `frame` as fast as possible, without reading, until `FLOOD_FRAMES` or the server closes."""
    for sent in range(FLOOD_FRAMES):
        try:
            await websocket.send(frame)
        except ConnectionClosed:
            return sent
    return FLOOD_FRAMES


async def errors_until_closed(websocket: ClientConnection) -> list[str]:
    """The codes of the error frames the server sends until it closes."""
    codes = []
    async with asyncio.timeout(10):
        try:
            while True:
                frame = json.loads(await websocket.recv())
                if frame["type"] == "error":
                    codes.append(frame["code"])
        except ConnectionClosed:
            return codes


async def test_a_flood_in_a_room_is_refused_then_closed_with_1008_and_the_room_goes_on(
    instance: Instance,
) -> None:
    url = instance.ws("/ws/rooms/lobby")
    async with connect_ws(url, instance.tokens["bob"]) as bystander:
        await receive_type(bystander, "presence.state")
        async with connect_ws(url, instance.tokens["alice"]) as flooder:
            await receive_type(flooder, "presence.state")
            await receive_presence(bystander, "alice")
            sent = await flood(flooder, json.dumps({"type": "chat.typing"}))
            codes = await errors_until_closed(flooder)
            assert flooder.close_code == 1008
        assert set(codes) == {"rate_limited"}
        print(f"\nflood in a room: {sent} frames sent, {len(codes)} rate_limited, then 1008")

        relayed = 0
        while (frame := await receive_json(bystander))["type"] == "chat.typing":
            relayed += 1
        assert frame == {"type": "presence.leave", "user": "alice"}
        assert 0 < relayed <= RATE_LIMIT_BURST + 5  # a few more tokens may be earned while flooding
        async with connect_ws(url, instance.tokens["carol"]) as carol:
            await receive_type(carol, "presence.state")
            await send_json(carol, {"type": "chat.message", "text": "calm again"})
            assert (await receive_type(bystander, "chat.message"))["text"] == "calm again"
{%- if cookiecutter.use_notifications == "y" %}


async def test_a_flood_of_subscriptions_is_refused_then_closed_with_1008(instance: Instance) -> None:
    url = instance.ws("/ws/notifications")
    async with connect_ws(url, instance.tokens["bob"]) as bystander:
        await joined(bystander, "/ws/notifications")
        async with connect_ws(url, instance.tokens["alice"]) as flooder:
            await flood(flooder, json.dumps({"type": "subscribe", "topic": "limits/flood"}))
            codes = await errors_until_closed(flooder)
            assert flooder.close_code == 1008
        assert set(codes) == {"rate_limited"}
        async with httpx.AsyncClient(base_url=instance.base_url, headers=instance.headers("root")) as http:
            published = await http.post("/notifications", json={"topic": "limits/feed", "data": "calm again"})
            assert published.status_code == 202
        assert (await receive_type(bystander, "notification"))["data"] == "calm again"
{%- endif %}
