"""The manager on one instance, over real WebSockets, on both brokers."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from {{ cookiecutter.package_name }}.realtime import InvalidMessage, InvalidTopic, Message, WebSocketManager

from .support import eventually, library_endpoint, receive_json, send_json, serve


async def assert_nothing_received(client: ClientConnection, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await receive_json(client, seconds)


async def test_the_library_protocol_subscribes_publishes_and_answers_errors(
    manager: WebSocketManager,
) -> None:
    async with (
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws?id=alice") as alice,
        connect(f"{url}/ws?id=bob") as bob,
    ):
        await send_json(alice, {"type": "subscribe", "topic": "orders/+/status"})
        assert await receive_json(alice) == {"type": "subscribed", "topic": "orders/+/status"}

        await send_json(bob, {"type": "send", "topic": "orders/7/status", "data": {"state": "paid"}})
        assert await receive_json(alice) == {
            "type": "send",
            "topic": "orders/7/status",
            "data": {"state": "paid"},
        }
        await assert_nothing_received(bob)

        await send_json(alice, {"type": "broadcast", "data": "hello"})
        assert await receive_json(alice) == await receive_json(bob) == {"type": "broadcast", "data": "hello"}

        await send_json(alice, {"type": "send_by_conn_id", "conn_id": "bob", "data": 1})
        assert await receive_json(bob) == {"type": "send_by_conn_id", "conn_id": "bob", "data": 1}
        await assert_nothing_received(alice)

        await send_json(alice, {"type": "unsubscribe", "topic": "orders/+/status"})
        assert await receive_json(alice) == {"type": "unsubscribed", "topic": "orders/+/status"}
        await send_json(bob, {"type": "send", "topic": "orders/7/status"})
        await assert_nothing_received(alice)

        for frame, code in [
            ("{not json", "invalid_json"),
            (b"\x00binary", "invalid_message"),
            ('["a list"]', "invalid_message"),
            ('{"type": "explode"}', "unknown_type"),
            ('{"type": "subscribe", "topic": "a/#/b"}', "invalid_topic"),
            ('{"type": "send", "topic": "a/+"}', "invalid_topic"),
        ]:
            await alice.send(frame)
            error = await receive_json(alice)
            assert (error["type"], error["code"]) == ("error", code)
            assert error["detail"]
        await send_json(alice, {"type": "broadcast", "data": "still open"})
        assert (await receive_json(alice))["data"] == "still open"


async def test_sends_from_the_server_reach_their_recipients(manager: WebSocketManager) -> None:
    async with (
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws?id=u1&group=room") as first,
        connect(f"{url}/ws?id=u1") as second,
        connect(f"{url}/ws?id=u2&group=room") as third,
    ):
        await manager.send_by_conn_id(Message(type="notification", conn_id="u1", data=1))
        assert (await receive_json(first))["data"] == (await receive_json(second))["data"] == 1
        await manager.send_by_conn_id(Message(type="notification", conn_id=["u1", "u2", "nobody"], data=2))
        assert [(await receive_json(client))["data"] for client in (first, second, third)] == [2, 2, 2]

        await manager.group_send("room", {"type": "chat.message", "text": "hi"})
        assert (
            await receive_json(first) == await receive_json(third) == {"type": "chat.message", "text": "hi"}
        )
        await assert_nothing_received(second)

        await manager.send_msg(Message(type="broadcast", data=3))
        assert [(await receive_json(client))["data"] for client in (first, second, third)] == [3, 3, 3]

        with pytest.raises(InvalidTopic):
            await manager.send(Message(type="notification", topic="a/#"))
        with pytest.raises(InvalidMessage):
            await manager.group_send("room", {"text": "no type"})
        with pytest.raises(InvalidMessage):
            await manager.send_msg(Message(type="notification"))


async def test_a_group_is_left_on_discard_and_discard_before_add_is_harmless(
    manager: WebSocketManager,
) -> None:
    async with serve({"/ws": library_endpoint(manager)}) as url, connect(f"{url}/ws?id=a") as client:
        await eventually(lambda: len(manager) == 1)
        (connection,) = manager.active_connections
        await manager.group_discard("room", connection)
        await manager.group_add("room", connection)
        await manager.group_add("room", connection)
        assert manager.group_members("room") == {connection}
        await manager.group_send("room", {"type": "ping"})
        assert await receive_json(client) == {"type": "ping"}
        await manager.group_discard("room", connection)
        await manager.group_discard("room", connection)
        assert connection.groups == frozenset()
        await manager.group_send("room", {"type": "ping"})
        await assert_nothing_received(client)


async def test_frames_arrive_in_order(manager: WebSocketManager) -> None:
    async with serve({"/ws": library_endpoint(manager)}) as url, connect(f"{url}/ws?id=a&group=g") as client:
        await eventually(lambda: len(manager) == 1)
        for number in range(60):
            if number % 3 == 0:
                await manager.group_send("g", {"type": "n", "n": number})
            elif number % 3 == 1:
                await manager.broadcast({"type": "n", "n": number})
            else:
                await manager.send_by_conn_id(Message(type="n", conn_id="a", data=number))
        received = [await receive_json(client) for _ in range(60)]
        assert [frame.get("n", frame.get("data")) for frame in received] == list(range(60))


async def test_an_oversized_frame_is_answered_then_closed_with_1009(
    broker_url: str, broker_channel: str
) -> None:
    async with (
        WebSocketManager(broker_channel, broker_url, max_frame_bytes=1000) as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws") as client,
    ):
        await client.send("é" * 400)
        await client.send("x" * 1001)
        assert (await receive_json(client))["code"] == "invalid_json"
        assert (await receive_json(client))["code"] == "too_large"
        with pytest.raises(ConnectionClosed) as closed:
            await receive_json(client)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
        await eventually(lambda: len(manager) == 0)


async def test_malformed_broker_messages_do_not_stop_the_listener(manager: WebSocketManager) -> None:
    async with serve({"/ws": library_endpoint(manager)}) as url, connect(f"{url}/ws") as client:
        await eventually(lambda: len(manager) == 1)
        channel = f"{manager.broker_channel}:broadcast"
        for garbage in (b"", b"\xff\xfe", b"{}\n{}", b'{"kind":"topic","target":"x"}\n{}', b'{"kind":"x"}'):
            await manager.broker.publish(channel, garbage)
        await manager.broadcast({"type": "after"})
        assert await receive_json(client) == {"type": "after"}
        assert manager.stats.malformed_broker_messages == 5
        assert manager.ready


async def test_shutdown_closes_every_connection_with_1012_and_leaves_no_task(
    broker_url: str, broker_channel: str
) -> None:
    baseline = len(asyncio.all_tasks())
    manager = WebSocketManager(broker_channel, broker_url)
    await manager.startup()
    await manager.startup()
    assert manager.ready
    async with serve({"/ws": library_endpoint(manager)}) as url:
        async with connect(f"{url}/ws?group=g") as first, connect(f"{url}/ws") as second:
            await eventually(lambda: len(manager) == 2)
            await manager.shutdown()
            for client in (first, second):
                with pytest.raises(ConnectionClosed) as closed:
                    await receive_json(client)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1012
        await manager.shutdown()
    assert not manager.ready
    await eventually(lambda: len(asyncio.all_tasks()) == baseline)


async def test_ten_thousand_messages_leave_the_task_count_unchanged(
    broker_url: str, broker_channel: str
) -> None:
    count = 10_000
    async with (
        WebSocketManager(broker_channel, broker_url, queue_size=count) as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws?group=g", max_queue=None) as first,
        connect(f"{url}/ws?group=g", max_queue=None) as second,
    ):
        await eventually(lambda: len(manager) == 2)
        before = len(asyncio.all_tasks())
        started = time.perf_counter()
        for batch in range(0, count, 100):
            await asyncio.gather(
                *(manager.group_send("g", {"type": "n", "n": number}) for number in range(batch, batch + 100))
            )
        for client in (first, second):
            async with asyncio.timeout(60):
                received = {json.loads(await client.recv())["n"] for _ in range(count)}
            assert received == set(range(count))
        elapsed = time.perf_counter() - started
        print(f"\n{count} group messages to 2 clients in {elapsed:.2f}s")
        assert len(asyncio.all_tasks()) == before


async def test_an_instance_hears_only_the_groups_it_has_members_in(
    redis_url: str, broker_channel: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    group_channel = f"{broker_channel}:group:room"

    async def subscribers() -> int:
        counts = dict(await client.pubsub_numsub(group_channel))
        return int(counts[group_channel.encode()])

    async with (
        WebSocketManager(broker_channel, redis_url) as first,
        WebSocketManager(broker_channel, redis_url) as second,
        serve({"/ws": library_endpoint(first)}) as url,
        connect(f"{url}/ws?group=room") as member,
    ):
        await eventually(lambda: len(first.group_members("room")) == 1)
        assert await subscribers() == 1
        heard_before = second.stats.broker_messages
        await second.group_send("room", {"type": "hello"})
        assert await receive_json(member) == {"type": "hello"}
        assert second.stats.broker_messages == heard_before
        await member.close()
        await eventually(lambda: len(first) == 0)
        assert await subscribers() == 0
    await client.aclose()
