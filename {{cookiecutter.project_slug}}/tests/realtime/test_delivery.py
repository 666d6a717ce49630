"""A client that never reads is closed with 1013 and does not hold back anyone else."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import AsyncExitStack

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from {{ cookiecutter.package_name }}.realtime import Message, WebSocketManager

from .support import eventually, library_endpoint, serve, stalling_client

OTHERS = 200
MESSAGES = 30
QUEUE_SIZE = 40
FILLER = "x" * 1_000_000


async def drain(client: ClientConnection) -> None:
    async with asyncio.timeout(30):
        while True:
            await client.recv()


async def read_all(client: ClientConnection) -> list[int]:
    return [json.loads(await client.recv())["n"] for _ in range(MESSAGES)]


async def test_a_slow_client_is_closed_with_1013_and_does_not_delay_the_others(
    broker_url: str, broker_channel: str
) -> None:
    async with (
        WebSocketManager(broker_channel, broker_url, queue_size=QUEUE_SIZE, close_timeout=30) as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        AsyncExitStack() as stack,
    ):
        # No reading: writes to this client stall after a few MB.
        slow = await stack.enter_async_context(stalling_client(url, "slow"))
        others = [await stack.enter_async_context(connect(f"{url}/ws")) for _ in range(OTHERS)]
        await eventually(lambda: len(manager) == OTHERS + 1)
        (stalled,) = manager.connections_by_id("slow")
        for _ in range(40):
            await manager.send_by_conn_id(Message(type="filler", conn_id="slow", data=FILLER))
            await asyncio.sleep(0.02)
            if stalled.pending > QUEUE_SIZE - MESSAGES:
                break
        assert stalled.pending > QUEUE_SIZE - MESSAGES

        readers = [asyncio.create_task(read_all(client)) for client in others]
        started = time.perf_counter()
        for number in range(MESSAGES):
            await manager.broadcast({"type": "n", "n": number})
        async with asyncio.timeout(30):
            results = await asyncio.gather(*readers)
        elapsed = time.perf_counter() - started
        print(f"\n{OTHERS} clients got {MESSAGES} broadcasts in {elapsed:.2f}s beside a stalled client")
        assert all(result == list(range(MESSAGES)) for result in results)
        assert elapsed < 5
        assert manager.stats.slow_consumers_closed == 1
        assert stalled.close_code == 1013
        # Its full queue was thrown away, with the frame that found it full and those sent while it closed.
        assert manager.stats.queue_high_water == QUEUE_SIZE
        assert manager.stats.frames_dropped >= QUEUE_SIZE + 1
        broadcasts = manager.stats.fanout["broadcast"]
        assert broadcasts.count == MESSAGES
        assert OTHERS * MESSAGES <= broadcasts.total <= (OTHERS + 1) * MESSAGES

        with pytest.raises(ConnectionClosed) as closed:
            await drain(slow)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013
        await eventually(lambda: len(manager) == OTHERS)
