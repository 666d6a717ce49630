"""Frames to an idle connection are written at once; one the socket cannot take waits, as do those after."""

from __future__ import annotations

import asyncio
import json
import socket

from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }}.realtime import Message, WebSocketManager

from .support import eventually, library_endpoint, serve

FRAMES = 120
FILLER = "x" * 100_000


async def test_frames_written_while_the_client_stops_reading_all_arrive_in_order(
    broker_url: str, broker_channel: str
) -> None:
    async with (
        WebSocketManager(broker_channel, broker_url, queue_size=FRAMES + 10, close_timeout=10) as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
    ):
        # A tiny receive window and a client that holds one frame unread: the server's writes stall.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        async with connect(
            f"{url}/ws?id=paused", sock=raw, max_queue=1, max_size=None, compression=None
        ) as client:
            await eventually(lambda: len(manager) == 1)
            (connection,) = manager.connections_by_id("paused")
            most_pending = 0
            for number in range(FRAMES):
                await manager.send_by_conn_id(Message(type="n", conn_id="paused", data=[number, FILLER]))
                await asyncio.sleep(0)
                most_pending = max(most_pending, connection.pending)
            # The socket stopped taking frames: the later ones waited in the queue behind the stalled one.
            assert most_pending > 0

            async with asyncio.timeout(30):
                received = [json.loads(await client.recv())["data"][0] for _ in range(FRAMES)]
            assert received == list(range(FRAMES))
            assert connection.close_code is None
            assert manager.stats.frames_dropped == 0
