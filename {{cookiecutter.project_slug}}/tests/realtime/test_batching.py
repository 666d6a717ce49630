"""`?batch=1`: the events waiting for a connection go out as the lines of one frame, in order, bounded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from {{ cookiecutter.package_name }}.realtime import Connection, Message, WebSocketManager
from {{ cookiecutter.package_name }}.realtime.message import encode_frame
from {{ cookiecutter.package_name }}.realtime.outbox import Filtered

from .support import close_received, eventually, library_endpoint, receive_json, send_json, serve


def event(number: int, text: str = "") -> str:
    return encode_frame({"type": "n", "n": number, "text": text})


async def lines_of(client: ClientConnection, count: int) -> tuple[list[int], list[str]]:
    """The numbers of the next `count` events, however they are framed, and the frames they came in."""
    numbers: list[int] = []
    frames: list[str] = []
    while len(numbers) < count:
        async with asyncio.timeout(30):
            frame = await client.recv()
        assert isinstance(frame, str)
        frames.append(frame)
        numbers.extend(json.loads(line)["n"] for line in frame.split("\n"))
    return numbers, frames


async def opened(manager: WebSocketManager, conn_id: str) -> Connection:
    await eventually(lambda: len(manager.connections_by_id(conn_id)) == 1)
    (connection,) = manager.connections_by_id(conn_id)
    return connection


async def test_events_queued_together_reach_a_batching_client_in_one_frame_and_others_one_by_one() -> None:
    async with (
        WebSocketManager("batching", "memory://") as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws?id=batched&batch=1") as batched,
        connect(f"{url}/ws?id=plain") as plain,
        connect(f"{url}/ws?id=declined&batch=0") as declined,
    ):
        connections = [await opened(manager, name) for name in ("batched", "plain", "declined")]
        assert [connection.batching for connection in connections] == [True, False, False]
        for connection in connections:
            for number in range(5):  # in one step of the event loop: the writer wakes once for all five
                assert connection.deliver(event(number))

        numbers, frames = await lines_of(batched, 5)
        assert numbers == [0, 1, 2, 3, 4]
        assert frames == ["\n".join(event(number) for number in range(5))]
        for client in (plain, declined):
            numbers, frames = await lines_of(client, 5)
            assert numbers == [0, 1, 2, 3, 4]
            assert len(frames) == 5


async def test_events_apart_in_time_but_within_the_interval_go_out_together() -> None:
    async with (
        WebSocketManager("batching", "memory://", batch_interval=2.0) as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws?id=batched&batch=1") as client,
    ):
        connection = await opened(manager, "batched")
        connection.deliver(event(0))  # the first in a while goes out at the next step
        assert await lines_of(client, 1) == ([0], [event(0)])
        for number in range(1, 5):  # each in a step of its own, before the interval is over
            connection.deliver(event(number))
            await asyncio.sleep(0.01)
        assert await lines_of(client, 4) == ([1, 2, 3, 4], ["\n".join(event(n) for n in range(1, 5))])


async def test_the_interval_counts_from_when_the_woken_writers_have_had_their_turn() -> None:
    interval, busy = 0.3, 0.3
    async with (
        WebSocketManager("batching", "memory://", batch_interval=interval) as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws?id=batched&batch=1") as client,
    ):
        connection = await opened(manager, "batched")
        loop = asyncio.get_running_loop()
        began = loop.time()
        connection.deliver(event(0))  # the first in a while: its round is the next step
        loop.call_soon(time.sleep, busy)  # that round takes the loop a while, as writing to many sockets does
        assert await lines_of(client, 1) == ([0], [event(0)])
        connection.deliver(event(1))
        assert await lines_of(client, 1) == ([1], [event(1)])
        # Counted from the round's start, the next could have gone at `interval`: it waits for the loop.
        assert loop.time() - began >= busy + interval


async def test_a_batch_stays_within_its_bound_in_bytes_and_a_larger_event_goes_alone() -> None:
    limit = 4096
    text = "é" * 900  # 1,800 bytes of UTF-8 in 900 characters: the bound counts bytes
    async with (
        WebSocketManager("batching", "memory://", batch_max_bytes=limit) as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws?id=batched&batch=1", max_size=None) as client,
    ):
        connection = await opened(manager, "batched")
        for number in range(40):
            connection.deliver(event(number, text))
        connection.deliver(event(40, "x" * (2 * limit)))
        connection.deliver(event(41))

        numbers, frames = await lines_of(client, 42)
        assert numbers == list(range(42))
        assert frames[-2:] == [event(40, "x" * (2 * limit)), event(41)]
        sizes = [len(frame.encode()) for frame in frames[:-2]]
        assert max(sizes) <= limit
        assert min(frame.count("\n") for frame in frames[:-2]) >= 1  # two events fit in every one of them


async def test_filters_calls_and_binary_frames_keep_their_place_in_a_batching_connection() -> None:
    def even(event: Mapping[str, Any], frame: str) -> bool:
        return bool(event["n"] % 2 == 0)

    async with (
        WebSocketManager("batching", "memory://") as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws?id=batched&batch=1") as client,
    ):
        connection = await opened(manager, "batched")

        async def call() -> None:
            await connection.send_text(event(100))

        for number in range(4):
            connection.deliver(Filtered(event(number), {"n": number}, even))
        connection.deliver(call)
        connection.deliver(event(4))
        connection.deliver(b"binary")
        connection.deliver(event(5))
        connection.deliver(event(6))

        async with asyncio.timeout(30):
            frames = [await client.recv() for _ in range(5)]
        assert frames == [
            "\n".join([event(0), event(2)]),
            event(100),
            event(4),
            b"binary",
            "\n".join([event(5), event(6)]),
        ]


async def test_every_event_of_a_busy_group_reaches_batching_and_plain_clients_once_in_order(
    broker_url: str, broker_channel: str
) -> None:
    count = 300
    async with (
        WebSocketManager(broker_channel, broker_url, queue_size=count + 10) as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws?id=batched&batch=1&group=room") as batched,
        connect(f"{url}/ws?id=plain&group=room") as plain,
    ):
        for name, client in (("batched", batched), ("plain", plain)):
            # Frames are read once the endpoint has joined the group: the answer says it has.
            await send_json(client, {"type": "send_by_conn_id", "conn_id": name, "data": "joined"})
            assert (await receive_json(client))["data"] == "joined"
        for number in range(count):
            await manager.group_send("room", {"type": "n", "n": number})
        for client in (batched, plain):
            numbers, _ = await lines_of(client, count)
            assert numbers == list(range(count))
        assert manager.stats.frames_dropped == 0


@pytest.mark.parametrize("value", ["2", "yes", ""])
async def test_a_batch_parameter_other_than_0_or_1_is_refused_with_1008(value: str) -> None:
    async with (
        WebSocketManager("batching", "memory://") as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws?id=bad&batch={value}") as client,
    ):
        assert await close_received(client) == (1008, "batch must be 0 or 1")
        assert len(manager) == 0


async def test_a_message_of_the_library_protocol_reaches_a_batching_client() -> None:
    async with (
        WebSocketManager("batching", "memory://") as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws?id=batched&batch=1") as client,
    ):
        await opened(manager, "batched")
        await manager.send_by_conn_id(Message(type="hello", conn_id="batched", data=1))
        assert json.loads(await client.recv()) == {"type": "hello", "conn_id": "batched", "data": 1}
