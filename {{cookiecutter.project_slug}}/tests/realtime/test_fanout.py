"""A fan-out is encoded once: recipients are left out by id (`exclude`) or by an event filter."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from {{ cookiecutter.package_name }}.realtime import JsonConsumer, WebSocketManager, event_filter

from .support import eventually, receive_json, serve

LISTENERS = 12


class HallConsumer(JsonConsumer):
    """`?user=` is the connection id (a user's tabs share it); `?mute=` names users whose shouts it skips."""

    groups = ("hall",)

    async def connect(self) -> None:
        self.conn_id = self.websocket.query_params["user"]
        self.muted = set(self.websocket.query_params.getlist("mute"))
        await self.accept()

    @event_filter("shout")
    def not_muted(self, event: Mapping[str, Any], frame: str) -> bool:
        if event.get("explode"):
            raise RuntimeError("the filter broke")
        return event["user"] not in self.muted

    async def whisper(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "whisper", "to": self.conn_id, "text": event["text"]})


async def assert_nothing_received(client: ClientConnection) -> None:
    with pytest.raises(TimeoutError):
        await receive_json(client, 0.3)


async def test_a_group_send_is_encoded_once_whatever_the_recipients_and_their_filters(
    manager: WebSocketManager,
) -> None:
    async with serve({"/ws": HallConsumer.as_endpoint(manager)}) as url, AsyncExitStack() as stack:

        async def join(query: str) -> ClientConnection:
            return await stack.enter_async_context(connect(f"{url}/ws?{query}"))

        alice, alice_tab = await join("user=alice"), await join("user=alice")
        carol = await join("user=carol&mute=bob")
        others = [await join(f"user=listener{number}") for number in range(LISTENERS)]
        await eventually(lambda: len(manager.group_members("hall")) == LISTENERS + 3)

        encoded = manager.stats.frames_encoded
        await manager.group_send("hall", {"type": "shout", "user": "bob", "text": "hi"}, exclude=["alice"])
        frames = {await client.recv() for client in others}
        assert manager.stats.frames_encoded == encoded + 1
        assert frames == {'{"type":"shout","user":"bob","text":"hi"}'}
        # Queued for every member but alice's two tabs; carol's filter decides later, in her writer task.
        hall = manager.stats.fanout["group"]
        assert (hall.count, hall.total) == (1, LISTENERS + 1)
        assert {bound: count for bound, count in hall.cumulative() if bound in (10, 20)} == {10: 0, 20: 1}
        assert manager.stats.frames_delivered == LISTENERS + 1
        for client in (alice, alice_tab, carol):
            await assert_nothing_received(client)

        await manager.group_send("hall", {"type": "shout", "user": "alice", "text": "yo"}, exclude="alice")
        assert (await receive_json(carol))["text"] == "yo"
        assert manager.stats.frames_encoded == encoded + 2
        await assert_nothing_received(alice_tab)

        # An event method sends a frame of its own to each recipient: one encoding each, on top.
        await manager.group_send("hall", {"type": "whisper", "text": "psst"}, exclude="alice")
        assert await receive_json(carol) == {"type": "whisper", "to": "carol", "text": "psst"}
        await eventually(lambda: manager.stats.frames_encoded == encoded + 3 + LISTENERS + 1)


async def test_a_failing_filter_is_answered_with_internal_error(manager: WebSocketManager) -> None:
    async with (
        serve({"/ws": HallConsumer.as_endpoint(manager)}) as url,
        connect(f"{url}/ws?user=alice") as alice,
    ):
        await eventually(lambda: len(manager.group_members("hall")) == 1)
        await manager.group_send("hall", {"type": "shout", "user": "bob", "explode": True})
        assert (await receive_json(alice))["code"] == "internal_error"
        assert manager.stats.handler_errors == 1
        await manager.group_send("hall", {"type": "shout", "user": "bob"})
        assert await receive_json(alice) == {"type": "shout", "user": "bob"}


def test_mistaken_filters_fail_at_class_creation() -> None:
    with pytest.raises(TypeError, match="plain method"):

        class Asynchronous(JsonConsumer):
            @event_filter("shout")
            async def wants(self, event: Mapping[str, Any], frame: str) -> bool:
                return True

    with pytest.raises(TypeError, match="two filters"):

        class Twice(JsonConsumer):
            @event_filter("shout")
            def first(self, event: Mapping[str, Any], frame: str) -> bool:
                return True

            @event_filter("shout", "whisper")
            def second(self, event: Mapping[str, Any], frame: str) -> bool:
                return True

    with pytest.raises(TypeError, match="both a filter and a method"):

        class Both(JsonConsumer):
            @event_filter("shout")
            def wants(self, event: Mapping[str, Any], frame: str) -> bool:
                return True

            async def shout(self, event: dict[str, Any]) -> None: ...

    with pytest.raises(TypeError, match="one or more event types"):
        event_filter()
