"""A chat room with `?batch=1`: every message once, with its seq, in order, live and replayed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from httpx import AsyncClient
from websockets.asyncio.client import ClientConnection

from .ws_support import Lobby, close_code, connect_ws, receive_type, send_json

MESSAGES = 15  # within the default burst of the rate limit


async def events_of(websocket: ClientConnection, event_type: str, count: int) -> list[dict[str, Any]]:
    """The next `count` events of `event_type`, each line of a frame an event, the others left out."""
    received: list[dict[str, Any]] = []
    while len(received) < count:
        async with asyncio.timeout(10):
            frame = await websocket.recv()
        assert isinstance(frame, str)
        events = [json.loads(line) for line in frame.split("\n")]
        received.extend(event for event in events if event["type"] == event_type)
    return received[:count]


async def test_a_batching_client_gets_every_message_once_in_seq_order_live_and_replayed(lobby: Lobby) -> None:
    url, alice, bob = lobby.url, lobby.alice, lobby.bob
    async with connect_ws(url, alice) as alice_ws, connect_ws(url, bob, batch=1) as bob_ws:
        await receive_type(alice_ws, "presence.state")
        await events_of(bob_ws, "presence.state", 1)
        for number in range(MESSAGES):
            await send_json(alice_ws, {"type": "chat.message", "text": f"message {number}"})
        live = await events_of(bob_ws, "chat.message", MESSAGES)
        echoes = [await receive_type(alice_ws, "chat.message") for _ in range(MESSAGES)]

    assert live == echoes  # the same events, byte for byte once decoded, however they were framed
    assert [event["seq"] for event in live] == list(range(1, MESSAGES + 1))
    assert [event["text"] for event in live] == [f"message {number}" for number in range(MESSAGES)]

    async with connect_ws(url, bob, batch=1, since=5) as bob_ws:
        replayed = await events_of(bob_ws, "chat.message", MESSAGES - 5)
    assert replayed == live[5:]


async def test_a_batch_parameter_other_than_0_or_1_closes_the_room_with_1008(lobby: Lobby) -> None:
    async with connect_ws(lobby.url, lobby.alice, batch="on") as websocket:
        assert await close_code(websocket) == 1008
        assert websocket.close_reason == "batch must be 0 or 1"


async def test_every_channel_of_the_asyncapi_document_offers_batches(client: AsyncClient) -> None:
    document = (await client.get("/asyncapi.json")).json()
    for name, channel in document["channels"].items():
        batch = channel["bindings"]["ws"]["query"]["properties"]["batch"]
        assert (batch["type"], batch["enum"], batch["default"]) == ("integer", [0, 1], 0), name
        assert "one JSON object a line" in batch["description"]
    rooms_query = document["channels"]["rooms"]["bindings"]["ws"]["query"]["properties"]
    assert {"since", "since_id", "batch"} <= set(rooms_query)
