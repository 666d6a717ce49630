"""Two managers on one Redis behave as two instances of the service."""

from __future__ import annotations

from contextlib import AsyncExitStack

from websockets.asyncio.client import ClientConnection, connect

from {{ cookiecutter.package_name }}.realtime import Message, WebSocketManager

from .support import eventually, library_endpoint, receive_json, send_json, serve


async def test_every_kind_of_send_reaches_the_other_instance(redis_url: str, broker_channel: str) -> None:
    async with (
        WebSocketManager(broker_channel, redis_url) as first,
        WebSocketManager(broker_channel, redis_url) as second,
        serve({"/first": library_endpoint(first), "/second": library_endpoint(second)}) as url,
        connect(f"{url}/first?id=alice") as alice,
        connect(f"{url}/second?id=bob&group=room") as bob,
    ):
        await send_json(bob, {"type": "subscribe", "topic": "orders/#"})
        assert (await receive_json(bob))["type"] == "subscribed"

        await send_json(alice, {"type": "send", "topic": "orders/7/status", "data": "paid"})
        assert await receive_json(bob) == {"type": "send", "topic": "orders/7/status", "data": "paid"}

        await send_json(alice, {"type": "broadcast", "data": "everyone"})
        assert (await receive_json(alice))["data"] == (await receive_json(bob))["data"] == "everyone"

        await send_json(alice, {"type": "send_by_conn_id", "conn_id": "bob", "data": "direct"})
        assert (await receive_json(bob))["data"] == "direct"

        await first.group_send("room", {"type": "chat.message", "text": "hi"})
        assert await receive_json(bob) == {"type": "chat.message", "text": "hi"}

        await second.send_by_conn_id(Message(type="notification", conn_id="alice", data=1))
        assert (await receive_json(alice))["data"] == 1


async def test_a_group_of_a_hundred_members_on_two_instances_receives_everything(
    redis_url: str, broker_channel: str
) -> None:
    async with (
        WebSocketManager(broker_channel, redis_url) as first,
        WebSocketManager(broker_channel, redis_url) as second,
        serve({"/first": library_endpoint(first), "/second": library_endpoint(second)}) as url,
        AsyncExitStack() as stack,
    ):
        members: list[ClientConnection] = []
        for number in range(100):
            path = "first" if number % 2 else "second"
            members.append(await stack.enter_async_context(connect(f"{url}/{path}?group=room")))
        await eventually(lambda: len(first.group_members("room")) == len(second.group_members("room")) == 50)

        for number in range(20):
            await (first if number % 2 else second).group_send("room", {"type": "n", "n": number})
        for member in members:
            assert [(await receive_json(member))["n"] for _ in range(20)] == list(range(20))
