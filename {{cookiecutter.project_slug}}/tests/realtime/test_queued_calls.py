"""A consumer's connection, and coroutines queued in order with its outgoing frames."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }}.realtime import Connection, JsonConsumer, WebSocketManager, event_filter, handler

from .support import eventually, receive_json, send_json, serve

ACCEPTED: list[tuple[Connection | None, Connection, Connection | None]] = []


class Release(BaseModel):
    type: Literal["release"]


class BacklogConsumer(JsonConsumer):
    """Sends a backlog of numbered frames from a queued call, once the client releases it; live frames
    queued meanwhile come after it, and those of numbers it sent are filtered out."""

    groups = ("feed",)

    async def connect(self) -> None:
        self.released = asyncio.Event()
        self.sent: set[int] = set()
        before = self.connection
        connection = await self.accept()
        ACCEPTED.append((before, connection, self.connection))
        self.queue_call(self.send_backlog)

    async def send_backlog(self) -> None:
        await self.released.wait()
        for number in range(3):
            await self.send_json({"type": "n", "n": number})
            self.sent.add(number)

    @handler
    async def on_release(self, message: Release) -> None:
        self.released.set()

    @event_filter("n")
    def not_sent(self, event: Mapping[str, Any], frame: str) -> bool:
        return event["n"] not in self.sent


async def test_a_queued_call_runs_in_order_with_the_frames_and_filters_see_what_it_did(
    manager: WebSocketManager,
) -> None:
    ACCEPTED.clear()
    async with (
        serve({"/ws": BacklogConsumer.as_endpoint(manager)}) as url,
        connect(f"{url}/ws") as client,
    ):
        # The group is joined inside accept(), just before connect() records what it saw.
        await eventually(lambda: len(ACCEPTED) == 1 and len(manager.group_members("feed")) == 1)
        before, accepted, after = ACCEPTED[-1]
        assert before is None
        assert accepted is after is next(iter(manager.group_members("feed")))

        for number in (1, 5):
            await manager.group_send("feed", {"type": "n", "n": number})
        await eventually(lambda: accepted.pending == 2)
        await send_json(client, {"type": "release"})
        assert [(await receive_json(client))["n"] for _ in range(4)] == [0, 1, 2, 5]


async def test_a_consumer_without_a_connection_cannot_queue_calls(manager: WebSocketManager) -> None:
    refusals: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        consumer = BacklogConsumer(websocket, manager)
        try:
            consumer.queue_call(consumer.send_backlog)
        except RuntimeError as error:
            refusals.append(str(error))
        try:
            await consumer.subscribe("a/b")
        except RuntimeError as error:
            refusals.append(str(error))
        await websocket.accept()
        await websocket.close()

    async with serve({"/ws": endpoint}) as url, connect(f"{url}/ws") as client:
        await client.wait_closed()
    assert refusals == ["the consumer has not accepted its connection yet"] * 2
