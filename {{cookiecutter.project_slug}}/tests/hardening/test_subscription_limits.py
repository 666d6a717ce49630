"""Subscriptions are bounded, and many do not slow every PUBLISH down: a real process on a private Redis.

A socket may hold `WS_MAX_SUBSCRIPTIONS_PER_CONNECTION` filters, of which
`WS_MAX_WILDCARD_SUBSCRIPTIONS_PER_CONNECTION` with wildcards, each at most `WS_MAX_TOPIC_FILTER_BYTES` long,
and a user `WS_MAX_SUBSCRIPTIONS_PER_USER` on an instance; one more is answered `limit_exceeded`, the socket
staying open. A filter without wildcards is a channel subscription: only wildcard filters are Redis patterns,
which is what made every PUBLISH slower as filters grew.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.asyncio.client import ClientConnection

from ..app.support import create_tables
from ..app.ws_support import connect_ws, instance_env, receive_json, receive_type, send_json
from ..processes import ProcessGroup
from .faults import PrivateRedis
from .support import HTTP_TIMEOUT, Instance, sign_in

pytestmark = pytest.mark.slow

PER_CONNECTION = 50  # the defaults
WILDCARDS_PER_CONNECTION = 5
PER_USER = 200
FILTER_BYTES = 256


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path_factory.mktemp("subscriptions-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory, private_redis: PrivateRedis) -> Iterator[Instance]:
    directory: Path = tmp_path_factory.mktemp("subscriptions")
    database_url = f"sqlite+aiosqlite:///{directory / 'app.db'}"
    asyncio.run(create_tables(database_url))
    channel = f"subscriptions-{secrets.token_hex(4)}"
    # A generous frame rate, so that the tests reach the subscription limits quickly.
    env = instance_env(
        database_url, private_redis.url, channel, ws_rate_limit_per_second="1000", ws_rate_limit_burst="1000"
    )
    with ProcessGroup(directory) as group:
        instance = Instance(group.start_app("subscriptions", env=env), env)
        with httpx.Client(base_url=instance.base_url, timeout=HTTP_TIMEOUT) as http:
            instance.tokens["root"] = sign_in(http, "root", register=False)
            for username in ("alice", "bob", "carol"):
                instance.tokens[username] = sign_in(http, username)
        yield instance


async def subscribe(websocket: ClientConnection, topic: str) -> dict[str, Any]:
    """Subscribe and return the answer: `subscribed` or an `error`."""
    await send_json(websocket, {"type": "subscribe", "topic": topic})
    while (frame := await receive_json(websocket))["type"] not in ("subscribed", "error"):
        pass
    return frame


async def test_one_filter_more_than_a_socket_may_hold_is_limit_exceeded_and_the_socket_stays_open(
    instance: Instance,
) -> None:
    async with connect_ws(instance.ws("/ws/notifications"), instance.tokens["alice"]) as websocket:
        # The user's own topic is the first filter held.
        for number in range(PER_CONNECTION - 1):
            assert (await subscribe(websocket, f"orders/{number}/status"))["type"] == "subscribed"
        refused = await subscribe(websocket, "orders/extra/status")
        assert (refused["type"], refused["code"]) == ("error", "limit_exceeded")
        await websocket.send('{"type": "unsubscribe", "topic": "orders/0/status"}')
        await receive_type(websocket, "unsubscribed")
        assert (await subscribe(websocket, "orders/extra/status"))["type"] == "subscribed"


async def test_wildcard_and_long_filters_are_limit_exceeded(instance: Instance) -> None:
    async with connect_ws(instance.ws("/ws/notifications"), instance.tokens["bob"]) as websocket:
        for number in range(WILDCARDS_PER_CONNECTION):
            assert (await subscribe(websocket, f"feeds/{number}/+"))["type"] == "subscribed"
        refused = await subscribe(websocket, "feeds/more/#")
        assert (refused["type"], refused["code"]) == ("error", "limit_exceeded")
        too_long = await subscribe(websocket, "a/" + "x" * FILTER_BYTES)
        assert (too_long["type"], too_long["code"]) == ("error", "limit_exceeded")
        assert (await subscribe(websocket, "feeds/exact"))["type"] == "subscribed"


async def test_the_sockets_of_one_user_share_a_limit(instance: Instance) -> None:
    url = instance.ws("/ws/notifications")
    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(connect_ws(url, instance.tokens["carol"]))
            for _ in range(PER_USER // PER_CONNECTION + 1)
        ]
        for (
            websocket
        ) in sockets:  # each holds the user's own topic from the start; once it answers, it is set up
            await subscribe(websocket, "users/carol/notifications")
        held = len(sockets)
        for websocket in sockets:
            for number in range(PER_CONNECTION - 1):
                if held == PER_USER:
                    break
                assert (await subscribe(websocket, f"q/{id(websocket)}/{number}"))["type"] == "subscribed"
                held += 1
            if held == PER_USER:
                refused = await subscribe(websocket, "q/over")
                assert (refused["type"], refused["code"]) == ("error", "limit_exceeded")
                return
    pytest.fail("the user's limit was never reached")


async def test_exact_filters_are_channels_and_a_topic_held_both_ways_arrives_once(
    instance: Instance, private_redis: PrivateRedis
) -> None:
    client = redis.Redis.from_url(private_redis.url)
    prefix = instance.env["BROKER_CHANNEL"]
    patterns_before = client.pubsub_numpat()
    async with connect_ws(instance.ws("/ws/notifications"), instance.tokens["alice"]) as websocket:
        for number in range(20):
            assert (await subscribe(websocket, f"exact/{number}"))["type"] == "subscribed"
        assert client.pubsub_numpat() == patterns_before
        assert len(client.pubsub_channels(f"{prefix}:topic:exact/*")) == 20
        assert (await subscribe(websocket, "exact/+"))["type"] == "subscribed"
        assert client.pubsub_numpat() == patterns_before + 1

        async with httpx.AsyncClient(base_url=instance.base_url, headers=instance.headers("root")) as http:
            for data in ("first", "second"):
                published = await http.post("/notifications", json={"topic": "exact/3", "data": data})
                assert published.status_code == 202
        first = await receive_type(websocket, "notification")
        second = await receive_type(websocket, "notification")
        assert (first["data"], second["data"]) == ("first", "second")
