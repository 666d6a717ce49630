"""The seed library's README examples, run as written (`readme_app`) on real uvicorn servers: in this event
loop on `memory://` and Redis, and as two processes sharing Redis, with the engine's broker and a user's
broker of six methods. Also the engine-level promises of that README: a manager started again after
`shutdown()`, `receive` during a broker outage, and a minimal broker refused where it cannot do the job.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect

from {{ cookiecutter.package_name }}.realtime import (
    BrokerInterface,
    BrokerUnavailable,
    Connection,
    InvalidSubscription,
    InvalidTopic,
    Message,
    WebSocketException,
    WebSocketManager,
    ahandle,
    create_broker,
    handle,
    matches,
)
from {{ cookiecutter.package_name }}.realtime.calls import start

from ..hardening.faults import TcpProxy
from ..processes import PROJECT_DIR, ProcessGroup, serve_in_loop, wait_until
from .readme_app import create_app
from .support import close_received, eventually, library_endpoint, serve, websocket_url
from .upstream_app import create_upstream_app

# The README registers its startup and shutdown with `@app.on_event`, which FastAPI deprecates but runs.
pytestmark = pytest.mark.filterwarnings(r"ignore:\s*on_event is deprecated:DeprecationWarning")


async def receive_type(client: ClientConnection, frame_type: str, seconds: float = 10.0) -> dict[str, Any]:
    """The next frame of type `frame_type`, skipping others."""
    async with asyncio.timeout(seconds):
        while True:
            frame: dict[str, Any] = json.loads(await client.recv())
            if frame.get("type") == frame_type:
                return frame


async def until_heard(
    act: Callable[[], Awaitable[None]], client: ClientConnection, frame_type: str
) -> dict[str, Any]:
    """Repeat `act` until `client` hears a frame of `frame_type`: a subscription made by a plain call is
    live once the broker confirmed it, a moment later."""
    async with asyncio.timeout(15):
        while True:
            await act()
            try:
                return await receive_type(client, frame_type, seconds=0.5)
            except TimeoutError:
                continue


async def say(client: ClientConnection, frame: dict[str, Any]) -> None:
    await client.send(json.dumps(frame))


@pytest.fixture
def readme_env(monkeypatch: pytest.MonkeyPatch, broker_url: str, broker_channel: str) -> str:
    monkeypatch.setenv("BROKER_URL", broker_url)
    monkeypatch.setenv("BROKER_CHANNEL", broker_channel)
    return broker_url


@asynccontextmanager
async def readme_server() -> AsyncIterator[str]:
    async with serve_in_loop(create_app()) as base_url:
        yield websocket_url(base_url)


async def test_basic_usage_broadcasts_what_a_client_sends(readme_env: str) -> None:
    async with readme_server() as url, connect(f"{url}/ws/a") as alice, connect(f"{url}/ws/b") as bob:

        async def hello() -> None:
            await say(alice, {"type": "hello", "from": "a"})

        assert await until_heard(hello, bob, "hello") == {"type": "hello", "from": "a"}
        assert (await receive_type(alice, "hello"))["from"] == "a"


async def test_iter_json_and_receive_subscribe_send_and_send_by_conn_id(readme_env: str) -> None:
    async with readme_server() as url, connect(f"{url}/iter/a") as alice, connect(f"{url}/iter/b") as bob:
        await say(alice, {"type": "subscribe", "topic": "news/+"})
        assert await receive_type(alice, "subscribed") == {"type": "subscribed", "topic": "news/+"}
        await say(bob, {"type": "send", "topic": "news/today", "data": 1})
        assert (await receive_type(alice, "send"))["data"] == 1
        await say(bob, {"type": "send_by_conn_id", "conn_id": "a", "data": 2})
        assert (await receive_type(alice, "send_by_conn_id"))["data"] == 2
        await say(alice, {"type": "broadcast", "data": 3})
        assert (await receive_type(bob, "broadcast"))["data"] == 3
        await say(alice, {"type": "subscribe", "topic": "a/#/c"})
        assert (await receive_type(alice, "error"))["code"] == "invalid_topic"


async def test_documented_functions_called_plain_take_effect(readme_env: str) -> None:
    async with readme_server() as url, connect(f"{url}/api/a") as alice, connect(f"{url}/api/b") as bob:
        await say(alice, {"type": "subscribe_plain", "topic": "news/#"})

        async def send_news() -> None:
            await say(bob, {"type": "send", "topic": "news/x", "data": "n"})

        assert (await until_heard(send_news, alice, "news"))["data"] == "n"
        await say(bob, {"type": "send_by_conn_id", "conn_id": "a", "data": "d"})
        assert (await receive_type(alice, "direct"))["data"] == "d"
        await say(bob, {"type": "send_msg", "data": "m"})
        assert (await receive_type(alice, "broadcast"))["data"] == "m"
        await say(bob, {"type": "broadcast", "data": "b"})
        assert (await receive_type(alice, "all"))["data"] == "b"

        await say(alice, {"type": "set_conn_id", "conn_id": "renamed"})
        assert await receive_type(alice, "set_conn_id") == {"type": "set_conn_id", "conn_id": "renamed"}

        async def send_to_renamed() -> None:
            await say(bob, {"type": "send_by_conn_id", "conn_id": "renamed", "data": "r"})

        assert (await until_heard(send_to_renamed, alice, "direct"))["data"] == "r"

        await say(alice, {"type": "subscribe", "topic": "alerts"})  # hanlde_subscription_message
        await say(alice, {"type": "topics", "topic": "rooms/+"})  # connection.topics.add, under handle()
        topics = (await receive_type(alice, "topics"))["topics"]
        assert set(topics) >= {"news/#", "rooms/+"}

        async def send_room() -> None:
            await say(bob, {"type": "send", "topic": "rooms/1", "data": "room"})

        assert (await until_heard(send_room, alice, "news"))["data"] == "room"

        await say(alice, {"type": "topics", "topic": "a+"})
        assert (await receive_type(alice, "topics"))["topics"][0].startswith("invalid: ")
        await say(alice, {"type": "subscribe", "topic": "a/#/c"})  # ahandle reads exc.connection
        assert (await receive_type(alice, "invalid"))["message"]
        await say(alice, {"type": "matches", "topic": "a/b/d", "patterns": ["a/#/c"]})
        assert (await receive_type(alice, "matches"))["result"] is False
        await say(alice, {"type": "matches", "topic": "a/b/c", "patterns": ["a/+/c"]})
        assert (await receive_type(alice, "matches"))["result"] is True


async def test_auth_gives_the_token_or_closes_with_1008(readme_env: str) -> None:
    async with readme_server() as url:
        headers = {"Authorization": "Bearer t0k3n"}
        async with connect(f"{url}/auth/a", additional_headers=headers) as client:
            assert await receive_type(client, "token") == {"type": "token", "token": "t0k3n"}
        async with connect(f"{url}/auth/a") as client:
            assert (await close_received(client))[0] == 1008


async def test_the_readme_gateway_relays_text_binary_and_close_codes_both_ways() -> None:
    async with serve_in_loop(create_upstream_app("upstream")) as upstream:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("WS_TARGET_ENDPOINT", websocket_url(upstream) + "/ws/echo?conn={}")
            async with readme_server() as gateway:
                async with connect(f"{gateway}/gateway/a") as client:
                    greeting = json.loads(await client.recv())
                    assert greeting["instance"] == "upstream"
                    assert greeting["query"] == "conn=a"
                    await client.send("héllo")
                    assert await client.recv() == "héllo"
                    await client.send(b"\x00\xff")
                    assert await client.recv() == b"\x00\xff"
                    await client.send("close:4001:room closed")
                    assert await close_received(client) == (4001, "room closed")
                async with connect(f"{gateway}/gateway/b") as client:
                    await client.recv()
                    await client.close(4002, "leaving")

                async def upstream_saw_4002() -> bool:
                    async with httpx.AsyncClient(base_url=upstream) as http:
                        closes = (await http.get("/websocket-closes")).json()
                    return {"code": 4002, "reason": "leaving"} in closes

                await wait_until(upstream_saw_4002)


async def test_a_user_broker_of_six_methods_carries_the_readme_examples(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, broker_channel: str
) -> None:
    monkeypatch.setenv("BROKER_URL", redis_url)
    monkeypatch.setenv("BROKER_CHANNEL", broker_channel)
    monkeypatch.setenv("README_BROKER", "custom")
    async with readme_server() as url, connect(f"{url}/iter/a") as alice, connect(f"{url}/iter/b") as bob:
        await say(alice, {"type": "subscribe", "topic": "news/+"})
        await receive_type(alice, "subscribed")
        await say(bob, {"type": "send", "topic": "news/today", "data": 1})
        assert (await receive_type(alice, "send"))["data"] == 1
        await say(alice, {"type": "broadcast", "data": 2})
        assert (await receive_type(bob, "broadcast"))["data"] == 2


class ListBroker(BrokerInterface):
    """The smallest broker the README allows: six methods, messages kept in a list."""

    async def connect(self) -> None:
        self.messages: list[Message] = []

    async def disconnect(self) -> None:
        self.messages.clear()

    async def subscribe(self, channel: str) -> None:
        self.channel = channel

    async def unsubscribe(self, channel: str) -> None:
        return None

    async def publish(self, channel: str, message: Any) -> None:
        self.messages.append(message)

    async def get_message(self, **kwargs: Any) -> Message | None:
        return self.messages.pop(0) if self.messages else None


async def test_a_minimal_broker_is_refused_at_startup_where_presence_must_be_shared(
    broker_channel: str,
) -> None:
    async def on_change(manager: WebSocketManager, change: Any) -> None:
        return None

    refused = WebSocketManager(broker_channel, broker=ListBroker, on_presence_change=on_change)
    with pytest.raises(RuntimeError, match="presence"):
        await refused.startup()
    async with WebSocketManager(broker_channel, broker=ListBroker) as manager:
        assert manager.ready


async def test_startup_after_shutdown_subscribes_to_broadcasts_again(
    readme_env: str, broker_channel: str
) -> None:
    manager = WebSocketManager(broker_channel, readme_env)
    await manager.startup()
    await manager.shutdown()
    await manager.startup()
    try:
        assert manager.ready
        async with serve({"/ws": library_endpoint(manager)}) as url, connect(f"{url}/ws?id=a") as client:
            await eventually(lambda: len(manager) == 1)
            await manager.broadcast({"type": "again"})
            assert await receive_type(client, "again") == {"type": "again"}
    finally:
        await manager.shutdown()


async def test_receive_answers_a_broker_outage_with_unavailable_and_keeps_the_connection(
    redis_url: str, broker_channel: str
) -> None:
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    with TcpProxy(host, int(port)) as proxy:
        manager = WebSocketManager(broker_channel, f"redis://127.0.0.1:{proxy.port}/0", command_timeout=1.0)
        async with (
            manager,
            serve({"/ws": library_endpoint(manager)}) as url,
            connect(f"{url}/ws?id=a") as client,
        ):
            await eventually(lambda: len(manager) == 1)
            proxy.cut()
            await say(client, {"type": "broadcast", "data": 1})
            assert (await receive_type(client, "error"))["code"] == "unavailable"
            proxy.restore()
            await eventually(lambda: manager.ready, seconds=15)
            await say(client, {"type": "broadcast", "data": 2})
            assert (await receive_type(client, "broadcast"))["data"] == 2


async def test_exceptions_carry_message_and_connection_and_ahandle_takes_sync_functions() -> None:
    error = WebSocketException("nope", connection=None)
    assert error.message == error.detail == "nope"
    handled: list[str] = []

    async def remember(exc: WebSocketException) -> str:
        handled.append(exc.message)
        return "handled"

    @ahandle(InvalidSubscription, remember)
    def sync_raiser() -> str:
        raise InvalidSubscription("bad", connection=None)

    @ahandle(InvalidSubscription, remember)
    async def async_raiser() -> str:
        raise InvalidSubscription("worse", connection=None)

    assert await sync_raiser() == await async_raiser() == "handled"
    assert handled == ["bad", "worse"]

    @handle(InvalidSubscription, lambda exc: exc.message)
    def plain() -> str:
        raise InvalidSubscription("plain", connection=None)

    assert plain() == "plain"
    assert not matches("a/b/d", {"a/#/c"})
    assert not matches("a/+", {"#"})


@pytest.fixture
def two_readme_instances(
    redis_url: str, broker_channel: str, process_group: ProcessGroup, request: pytest.FixtureRequest
) -> tuple[str, str]:
    """The README app twice, on Redis; the first's gateway relays to the second's `/iter/{conn_id}`."""
    env = {"BROKER_URL": redis_url, "BROKER_CHANNEL": broker_channel, "README_BROKER": request.param}
    second = process_group.start_uvicorn(
        "readme-2",
        "tests.realtime.readme_app:create_app",
        factory=True,
        app_dir=PROJECT_DIR,
        env=env,
        health_path="/readyz",
    )
    target = {"WS_TARGET_ENDPOINT": second.ws_url + "/iter/{}"}
    first = process_group.start_uvicorn(
        "readme-1",
        "tests.realtime.readme_app:create_app",
        factory=True,
        app_dir=PROJECT_DIR,
        env={**env, **target},
        health_path="/readyz",
    )
    return first.ws_url, second.ws_url


@pytest.mark.slow
@pytest.mark.parametrize("two_readme_instances", ["engine", "custom"], indirect=True)
async def test_the_readme_examples_across_two_processes(two_readme_instances: tuple[str, str]) -> None:
    first, second = two_readme_instances
    async with (
        connect(f"{first}/iter/a") as alice,
        connect(f"{second}/api/b") as bob,
        connect(f"{first}/gateway/c") as carol,
    ):
        await say(alice, {"type": "subscribe", "topic": "news/+"})
        await receive_type(alice, "subscribed")

        async def send_news() -> None:
            await say(bob, {"type": "send", "topic": "news/x", "data": "from two"})

        assert (await until_heard(send_news, alice, "news"))["data"] == "from two"

        async def broadcast_from_gateway() -> None:
            await say(carol, {"type": "broadcast", "data": "via gateway"})

        assert (await until_heard(broadcast_from_gateway, alice, "broadcast"))["data"] == "via gateway"
        await say(bob, {"type": "send_by_conn_id", "conn_id": "c", "data": "to carol"})
        assert (await receive_type(carol, "direct"))["data"] == "to carol"
        await say(bob, {"type": "set_conn_id", "conn_id": "bobby"})
        assert (await receive_type(bob, "set_conn_id"))["conn_id"] == "bobby"
        await carol.send(b"\x00binary")
        assert (await receive_type(carol, "error"))["code"] == "invalid_message"


async def test_a_connection_around_a_socket_the_app_accepted_sends_and_an_unaccepted_one_raises(
    manager: WebSocketManager,
) -> None:
    outcome: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        unaccepted = Connection(websocket, "early")
        try:
            await unaccepted.send_json({"type": "lost"})
        except RuntimeError:
            outcome.append("raised")
        await websocket.accept()
        connection = Connection(websocket, "late")
        await manager.add_connection(connection)
        await connection.send_json({"type": "sent"})
        async for message in connection.iter_json():
            await manager.receive(connection, message)
        await manager.remove_connection(connection)

    async with serve({"/ws": endpoint}) as url, connect(f"{url}/ws") as client:
        assert await receive_type(client, "sent") == {"type": "sent"}
        assert outcome == ["raised"]


async def test_topics_is_a_set_whose_changes_subscribe_and_unsubscribe(manager: WebSocketManager) -> None:
    async with serve({"/ws": library_endpoint(manager)}) as url, connect(f"{url}/ws?id=a") as client:
        await eventually(lambda: len(manager) == 1)
        (connection,) = manager.connections_by_id("a")
        connection.topics.add("news/+")
        assert "news/+" in connection.topics
        await connection.settled()
        await manager.send("news/1", {"type": "news", "n": 1})
        assert (await receive_type(client, "news"))["n"] == 1
        connection.topics.discard("news/+")
        connection.topics.add("other")
        await connection.settled()
        assert set(connection.topics) == {"other"}
        await manager.send("news/2", {"type": "news", "n": 2})
        await manager.send("other", {"type": "other"})
        assert (await client.recv()) == '{"type":"other"}'  # the news after the discard never came
        with pytest.raises(InvalidSubscription) as invalid:
            connection.topics.add("a/#/b")
        assert invalid.value.connection is connection
        with pytest.raises(InvalidTopic):
            manager.send("a/+", {"type": "never"})  # a plain call that cannot work fails at once


async def test_a_broker_publishes_a_message_or_a_dict(broker_url: str, broker_channel: str) -> None:
    broker = create_broker(broker_url)
    await broker.connect()
    try:
        channel = f"{broker_channel}:raw"
        await broker.subscribe(channel)
        await broker.publish(channel, Message(type="note", topic="t", data=1))
        await broker.publish(channel, {"type": "note", "data": 2})
        async with asyncio.timeout(5):
            first, second = await broker.get_message(), await broker.get_message()
        assert json.loads(first.data) == {"type": "note", "topic": "t", "data": 1}
        assert json.loads(second.data) == {"type": "note", "data": 2}
    finally:
        await broker.disconnect()


async def test_a_plain_call_that_fails_is_logged_and_an_awaited_one_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail() -> None:
        await asyncio.sleep(0)
        raise BrokerUnavailable("down")

    caplog.set_level(logging.ERROR)
    with pytest.raises(BrokerUnavailable):
        await start(fail())
    plain = start(fail())
    await asyncio.wait({plain.task})
    await asyncio.sleep(0)  # the done callback runs on the next turn
    failures = [record for record in caplog.records if "nobody awaited" in record.getMessage()]
    assert len(failures) == 1
