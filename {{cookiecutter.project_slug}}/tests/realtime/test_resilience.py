"""Redis going away and coming back, and Redis doing nothing: the listener copes with both."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Literal

import pytest
import redis.asyncio
from pydantic import BaseModel
from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }}.realtime import (
    BrokerState,
    BrokerUnavailable,
    JsonConsumer,
    RedisBroker,
    WebSocketManager,
    handler,
)

from .support import eventually, library_endpoint, receive_json, send_json, serve


async def test_delivery_resumes_by_itself_after_the_pubsub_connection_is_killed(
    redis_url: str, broker_channel: str
) -> None:
    name = f"{broker_channel}-listener"
    admin = redis.asyncio.Redis.from_url(redis_url)
    async with (
        WebSocketManager(broker_channel, redis_url, client_name=name, reconnect_delay=0.05) as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        connect(f"{url}/ws?group=g") as client,
    ):
        await eventually(lambda: len(manager.group_members("g")) == 1)
        counter = itertools.count()

        async def publish_forever() -> None:
            while True:
                await manager.group_send("g", {"type": "n", "n": next(counter)})
                await asyncio.sleep(0.01)

        publisher = asyncio.create_task(publish_forever())
        try:
            received = [json.loads(await client.recv())["n"] for _ in range(5)]
            listeners = [entry for entry in await admin.client_list(_type="pubsub") if entry["name"] == name]
            assert len(listeners) == 1
            await admin.client_kill_filter(_id=listeners[0]["id"], _type="pubsub")
            killed_at = next(counter)
            async with asyncio.timeout(10):
                while received[-1] <= killed_at + 5:
                    received.append(json.loads(await client.recv())["n"])
        finally:
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
        assert received == sorted(received)
        assert isinstance(manager.broker, RedisBroker)
        assert manager.broker.reconnects == 1
        assert manager.broker.last_error is not None
        assert manager.broker.state is BrokerState.CONNECTED
        assert manager.ready
    await admin.aclose()


async def test_an_idle_redis_broker_uses_almost_no_cpu(redis_url: str, broker_channel: str) -> None:
    async with WebSocketManager(broker_channel, redis_url) as manager:
        await manager.broker.subscribe(*(f"{broker_channel}:idle:{number}" for number in range(50)))
        await manager.broker.psubscribe(f"{broker_channel}:idle-pattern:*")
        await asyncio.sleep(0.3)
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(3)
        share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    print(f"\nidle manager on Redis: {share:.3%} of a core")
    assert share < 0.02


class Shout(BaseModel):
    type: Literal["shout"]


class ShoutingConsumer(JsonConsumer):
    groups = ("hall",)

    @handler
    async def on_shout(self, message: Shout) -> None:
        await self.group_send("hall", {"type": "shouted"})


async def test_sends_while_redis_is_unreachable_raise_and_a_consumer_answers_unavailable(
    broker_channel: str,
) -> None:
    async with (
        WebSocketManager(broker_channel, "redis://127.0.0.1:1/0", reconnect_delay=0.05) as manager,
        serve({"/ws": ShoutingConsumer.as_endpoint(manager)}) as url,
        connect(f"{url}/ws") as client,
    ):
        assert not manager.ready
        with pytest.raises(BrokerUnavailable):
            await manager.group_send("hall", {"type": "shouted"})
        await send_json(client, {"type": "shout"})
        error = await receive_json(client)
        assert (error["type"], error["code"]) == ("error", "unavailable")
        await send_json(client, {"type": "shout"})
        assert (await receive_json(client))["code"] == "unavailable"
        assert manager.stats.handler_errors == 0
