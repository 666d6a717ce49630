"""Frames to an idle connection are written by the next round of writes, or by the connection's own task;
one the socket cannot take waits, as do those queued after it, and no other connection does."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect

from {{ cookiecutter.package_name }}.realtime import Message, WebSocketManager

from .support import FILLER, eventually, library_endpoint, send_through_a_stall, serve, stalling_client

FRAMES = 120
OTHERS = 20
BROADCASTS = 30


class HeldSends:
    """Holds every frame written to the connection of `?id=held` until `released` is set, as a socket whose
    buffer is full would; the frames of other connections go straight on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.released = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or not scope["query_string"].startswith(b"id=held"):
            await self.app(scope, receive, send)
            return

        async def held(message: ASGIMessage) -> None:
            if message["type"] == "websocket.send":
                await self.released.wait()
            await send(message)

        await self.app(scope, receive, held)


async def read_numbers(client: ClientConnection) -> list[int]:
    """The numbers of the broadcasts, one a frame, or one a line for a client that asked for batches."""
    numbers: list[int] = []
    while len(numbers) < BROADCASTS:
        frame = await client.recv()
        assert isinstance(frame, str)
        numbers.extend(json.loads(line)["n"] for line in frame.split("\n"))
    return numbers


async def test_frames_written_while_the_client_stops_reading_all_arrive_in_order(
    broker_url: str, broker_channel: str
) -> None:
    async with (
        WebSocketManager(broker_channel, broker_url, queue_size=FRAMES + 10, close_timeout=10) as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        stalling_client(url, "paused") as client,
    ):
        await send_through_a_stall(manager, client, "paused", FRAMES)


async def test_frames_a_connection_sends_itself_while_its_socket_stalls_keep_their_order(
    broker_url: str, broker_channel: str
) -> None:
    """The connection's own task writes to its idle socket itself; frames that others queue while that write
    waits for the socket come after it, and the sender of another connection is never held up."""
    sent_own = asyncio.Event()

    async def endpoint(websocket: WebSocket) -> None:
        connection = await manager.new_connection(websocket, websocket.query_params.get("id"))
        for number in range(0, FRAMES, 2):
            await connection.send_json({"type": "n", "data": [number, FILLER]})
        sent_own.set()
        async for message in connection.iter_json():
            await manager.receive(connection, message)
        await manager.remove_connection(connection)

    async with (
        WebSocketManager(broker_channel, broker_url, queue_size=FRAMES + 10, close_timeout=10) as manager,
        serve({"/ws": endpoint}) as url,
        stalling_client(url, "paused") as client,
    ):
        await eventually(lambda: len(manager) == 1)
        # Another task's frames are queued at once, whatever the socket does.
        for number in range(1, FRAMES, 2):
            async with asyncio.timeout(5):
                await manager.send_by_conn_id(Message(type="n", conn_id="paused", data=[number, FILLER]))
        async with asyncio.timeout(30):
            received = [json.loads(await client.recv())["data"][0] for _ in range(FRAMES)]
            await sent_own.wait()
        own = [number for number in received if number % 2 == 0]
        others = [number for number in received if number % 2 == 1]
        assert own == list(range(0, FRAMES, 2))
        assert others == list(range(1, FRAMES, 2))
        assert manager.stats.frames_dropped == 0


@pytest.mark.parametrize("batch", ["0", "1"])
async def test_a_socket_that_holds_up_a_round_delays_neither_the_others_nor_its_own_order(
    broker_url: str, broker_channel: str, batch: str
) -> None:
    """The round that writes the first broadcast waits for the held connection (it was idle): the connections
    it had not reached get that broadcast and the next ones from their own writers, while the held one
    keeps what comes after queued behind the write in progress, and gets it all in order once released.
    Alike for clients that ask for batches, whose rounds are their own."""
    async with WebSocketManager(
        broker_channel, broker_url, queue_size=BROADCASTS + 10, close_timeout=10
    ) as manager:
        app = HeldSends(Starlette(routes=[WebSocketRoute("/ws", library_endpoint(manager))]))
        async with serve([], app=app) as url, AsyncExitStack() as stack:
            held = await stack.enter_async_context(connect(f"{url}/ws?id=held&batch={batch}"))
            await eventually(lambda: len(manager) == 1)  # the first in every round
            others = [
                await stack.enter_async_context(connect(f"{url}/ws?batch={batch}")) for _ in range(OTHERS)
            ]
            await eventually(lambda: len(manager) == OTHERS + 1)
            (connection,) = manager.connections_by_id("held")
            assert connection.idle

            readers = [asyncio.create_task(read_numbers(client)) for client in others]
            for number in range(BROADCASTS):
                await manager.broadcast({"type": "n", "n": number})
            async with asyncio.timeout(10):
                results = await asyncio.gather(*readers)
            assert results == [list(range(BROADCASTS))] * OTHERS
            # The first round's write to it is in progress (a batch may hold them all), the rest waits behind.
            if batch == "0":
                assert connection.pending == BROADCASTS - 1
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await held.recv()

            app.released.set()
            async with asyncio.timeout(10):
                assert await read_numbers(held) == list(range(BROADCASTS))
            assert manager.stats.frames_dropped == 0
            assert connection.close_code is None


EAGER_TASK_FACTORY = getattr(asyncio, "eager_task_factory", None)


@pytest.mark.skipif(EAGER_TASK_FACTORY is None, reason="eager tasks came with Python 3.12")
async def test_on_a_loop_that_starts_tasks_eagerly_every_frame_arrives_in_order(
    broker_url: str, broker_channel: str
) -> None:
    """A round's task may run its first step as it is made: the connection that starts it is written."""
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    loop.set_task_factory(EAGER_TASK_FACTORY)
    try:
        async with (
            WebSocketManager(broker_channel, broker_url) as manager,
            serve({"/ws": library_endpoint(manager)}) as url,
            AsyncExitStack() as stack,
        ):
            clients = [await stack.enter_async_context(connect(f"{url}/ws")) for _ in range(OTHERS)]
            await eventually(lambda: len(manager) == OTHERS)
            readers = [asyncio.create_task(read_numbers(client)) for client in clients]
            for number in range(BROADCASTS):
                await manager.broadcast({"type": "n", "n": number})
            async with asyncio.timeout(10):
                assert await asyncio.gather(*readers) == [list(range(BROADCASTS))] * OTHERS
    finally:
        loop.set_task_factory(previous)
