"""Frames to an idle connection are written at once; one the socket cannot take waits, as do those after."""

from __future__ import annotations

import asyncio
import json

from starlette.websockets import WebSocket

from {{ cookiecutter.package_name }}.realtime import Message, WebSocketManager

from .support import FILLER, eventually, library_endpoint, send_through_a_stall, serve, stalling_client

FRAMES = 120


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
