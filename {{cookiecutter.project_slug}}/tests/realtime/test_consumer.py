"""Consumers: typed handlers, error frames, group events, hooks, limits, and mounting on FastAPI."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from {{ cookiecutter.package_name }}.realtime import (
    JsonConsumer,
    RateLimit,
    WebSocketException,
    WebSocketManager,
    handler,
)

from .support import eventually, receive_json, send_json, serve


class Say(BaseModel):
    type: Literal["say"]
    text: str = Field(min_length=1)


class Said(BaseModel):
    type: Literal["said"] = "said"
    user: str
    text: str


class Ping(BaseModel):
    type: Literal["ping"]


class Pong(BaseModel):
    type: Literal["pong"] = "pong"
    room: str


class Explode(BaseModel):
    type: Literal["explode"]


class Trespass(BaseModel):
    type: Literal["trespass"]


class Typing(BaseModel):
    type: Literal["typing"] = "typing"
    user: str


DISCONNECTS: list[tuple[str, int]] = []


class RoomConsumer(JsonConsumer):
    """A test room: everyone joins `room`."""

    groups = ("room",)
    sends = (Typing,)

    async def connect(self) -> None:
        if "refuse" in self.websocket.query_params:
            return
        self.user = self.websocket.query_params.get("user", "anonymous")
        await self.accept()

    @handler(sends=[Said])
    async def on_say(self, message: Say) -> None:
        """Say something to the room."""
        await self.group_send("room", Said(user=self.user, text=message.text))

    @handler
    async def on_ping(self, message: Ping) -> Pong:
        return Pong(room=self.websocket.path_params.get("room", "none"))

    @handler
    async def on_trouble(self, message: Explode | Trespass) -> None:
        if isinstance(message, Trespass):
            raise WebSocketException("members only", code="forbidden")
        raise RuntimeError("the handler broke")

    async def typing(self, event: dict[str, Any]) -> None:
        if event["user"] != self.user:
            await self.send_json(event)

    async def broken(self, event: dict[str, Any]) -> None:
        raise RuntimeError("the event handler broke")

    async def disconnect(self, code: int) -> None:
        DISCONNECTS.append((self.user, code))


async def test_frames_are_routed_by_type_to_validated_typed_handlers(manager: WebSocketManager) -> None:
    async with (
        serve({"/ws": RoomConsumer.as_endpoint(manager)}) as url,
        connect(f"{url}/ws?user=alice") as alice,
        connect(f"{url}/ws?user=bob") as bob,
    ):
        await send_json(alice, {"type": "say", "text": "hello"})
        said = {"type": "said", "user": "alice", "text": "hello"}
        assert await receive_json(alice) == await receive_json(bob) == said

        await send_json(bob, {"type": "ping"})
        assert await receive_json(bob) == {"type": "pong", "room": "none"}

        expected = [
            (
                '{"type": "say", "text": ""}',
                "invalid_message",
                "text: String should have at least 1 character",
            ),
            ('{"type": "say"}', "invalid_message", "text: Field required"),
            ('{"type": "dance"}', "unknown_type", "explode, ping, say, trespass"),
            ('{"text": "no type"}', "invalid_message", "'type'"),
            ("[1, 2]", "invalid_message", "JSON object"),
            ("{oops", "invalid_json", "JSON"),
            (b"\x01\x02", "invalid_message", "binary"),
            ('{"type": "trespass"}', "forbidden", "members only"),
            ('{"type": "explode"}', "internal_error", "could not handle"),
        ]
        for frame, code, detail in expected:
            await alice.send(frame)
            error = await receive_json(alice)
            assert (error["type"], error["code"]) == ("error", code)
            assert detail in error["detail"]
        assert manager.stats.handler_errors == 1
        await send_json(alice, {"type": "ping"})
        assert (await receive_json(alice))["type"] == "pong"


async def test_group_events_go_to_the_method_named_after_their_type(manager: WebSocketManager) -> None:
    async with (
        serve({"/ws": RoomConsumer.as_endpoint(manager)}) as url,
        connect(f"{url}/ws?user=alice") as alice,
        connect(f"{url}/ws?user=bob") as bob,
    ):
        await eventually(lambda: len(manager.group_members("room")) == 2)
        await manager.group_send("room", Typing(user="alice"))
        assert await receive_json(bob) == {"type": "typing", "user": "alice"}

        await manager.group_send("room", {"type": "broken"})
        for client in (alice, bob):
            assert (await receive_json(client))["code"] == "internal_error"
        assert manager.stats.handler_errors == 2

        for event_type in ("close", "_secret", "on_say", "news.flash"):
            await manager.group_send("room", {"type": event_type})
            assert await receive_json(alice) == await receive_json(bob) == {"type": event_type}
        await send_json(alice, {"type": "ping"})
        assert (await receive_json(alice))["type"] == "pong"


async def test_groups_are_left_and_disconnect_is_called_when_the_client_leaves(
    manager: WebSocketManager,
) -> None:
    async with serve({"/ws": RoomConsumer.as_endpoint(manager)}) as url:
        async with connect(f"{url}/ws?user=carol") as carol:
            await eventually(lambda: len(manager.group_members("room")) == 1)
            await carol.close(4000)
        await eventually(lambda: ("carol", 4000) in DISCONNECTS)
        assert manager.group_members("room") == frozenset()
        assert len(manager) == 0


async def test_a_consumer_that_does_not_accept_refuses_the_handshake(manager: WebSocketManager) -> None:
    async with serve({"/ws": RoomConsumer.as_endpoint(manager)}) as url:
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{url}/ws?refuse")
        assert refused.value.response.status_code == 403
    assert len(manager) == 0


async def test_limits_answer_rate_limited_and_close_oversized_frames_with_1009(
    broker_url: str, broker_channel: str
) -> None:
    async with (
        WebSocketManager(broker_channel, broker_url, max_frame_bytes=200) as manager,
        serve(
            {"/ws": RoomConsumer.as_endpoint(manager, rate_limit=RateLimit(per_second=0.5, burst=2))}
        ) as url,
        connect(f"{url}/ws?user=dave") as dave,
    ):
        for _ in range(3):
            await send_json(dave, {"type": "ping"})
        assert [(await receive_json(dave)).get("code") for _ in range(3)] == [None, None, "rate_limited"]
        await dave.send("x" * 201)
        assert (await receive_json(dave))["code"] == "too_large"
        with pytest.raises(ConnectionClosed) as closed:
            await receive_json(dave)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


async def test_a_rate_limit_with_close_after_closes_a_client_that_keeps_on_with_1008(
    manager: WebSocketManager,
) -> None:
    limit = RateLimit(per_second=0.1, burst=2, close_after=2)
    async with (
        serve({"/ws": RoomConsumer.as_endpoint(manager, rate_limit=limit)}) as url,
        connect(f"{url}/ws?user=frank") as frank,
    ):
        for _ in range(5):
            await send_json(frank, {"type": "ping"})
        codes = [(await receive_json(frank)).get("code") for _ in range(5)]
        assert codes == [None, None, "rate_limited", "rate_limited", "rate_limited"]
        with pytest.raises(ConnectionClosed) as closed:
            await receive_json(frank)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "Rate limit exceeded")
    await eventually(lambda: ("frank", 1008) in DISCONNECTS)
    with pytest.raises(ValueError, match="per_second"):
        RateLimit(per_second=0, burst=1)


async def test_a_consumer_mounts_on_a_fastapi_route_with_path_parameters(manager: WebSocketManager) -> None:
    app = FastAPI()
    app.state.manager = manager
    app.add_api_websocket_route("/rooms/{room}", RoomConsumer.as_endpoint(lambda ws: ws.app.state.manager))
    async with serve([], app=app) as url, connect(f"{url}/rooms/lobby?user=erin") as erin:
        await send_json(erin, {"type": "ping"})
        assert await receive_json(erin) == {"type": "pong", "room": "lobby"}


def test_handler_declarations_are_exposed_for_documentation() -> None:
    specs = {spec.message_type: spec for spec in RoomConsumer.handler_specs()}
    assert sorted(specs) == ["explode", "ping", "say", "trespass"]
    assert (specs["say"].method, specs["say"].model, specs["say"].sends) == ("on_say", Say, (Said,))
    assert specs["say"].summary == "Say something to the room."
    assert specs["trespass"].model is Trespass
    assert RoomConsumer.sends == (Typing,)


def test_mistaken_declarations_fail_at_class_creation() -> None:
    with pytest.raises(TypeError, match="two handlers"):

        class Twice(JsonConsumer):
            @handler
            async def first(self, message: Ping) -> None: ...

            @handler(model=Ping)
            async def second(self, message: Any) -> None: ...

    with pytest.raises(TypeError, match="Literal"):

        class Untyped(JsonConsumer):
            @handler(model=BaseModel)
            async def on_anything(self, message: Any) -> None: ...

    with pytest.raises(TypeError, match="async"):
        handler(model=Ping)(lambda self, message: None)
