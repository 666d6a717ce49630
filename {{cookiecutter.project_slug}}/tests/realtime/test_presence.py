"""Presence across instances: each arrival and departure reported once, even when a whole instance dies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }}.realtime import Connection, PresenceChange, RedisBroker, WebSocketManager

from .support import eventually, library_endpoint, serve

GROUPS = 20


@asynccontextmanager
async def connected(broker: RedisBroker) -> AsyncIterator[RedisBroker]:
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.disconnect()


class Changes(list[tuple[WebSocketManager, PresenceChange]]):
    """What `on_presence_change` heard, and from which manager."""

    async def __call__(self, manager: WebSocketManager, change: PresenceChange) -> None:
        self.append((manager, change))


async def test_a_member_counts_once_and_leaves_with_their_last_connection(manager: WebSocketManager) -> None:
    async with serve({"/ws": library_endpoint(manager)}) as url, AsyncExitStack() as stack:
        for _ in range(3):
            await stack.enter_async_context(connect(f"{url}/ws"))
        await eventually(lambda: len(manager) == 3)
        tab1, tab2, other = manager.active_connections
        assert await manager.presence_join("room", tab1, "alice") is True
        assert await manager.presence_join("room", tab2, "alice") is False
        assert await manager.presence_join("room", other, "bob") is True
        assert await manager.presence_members("room") == {"alice", "bob"}
        assert await manager.presence_leave("room", tab1) is False
        assert await manager.presence_leave("room", tab2) is True
        assert await manager.presence_leave("room", tab2) is False
        await manager.remove_connection(other)
        assert await manager.presence_members("room") == set()


async def test_first_and_last_connections_on_two_instances_at_once_are_reported_exactly_once(
    redis_url: str, broker_channel: str
) -> None:
    async with (
        WebSocketManager(broker_channel, redis_url) as first,
        WebSocketManager(broker_channel, redis_url) as second,
        serve({"/first": library_endpoint(first), "/second": library_endpoint(second)}) as url,
        connect(f"{url}/first"),
        connect(f"{url}/second"),
    ):
        await eventually(lambda: len(first) == len(second) == 1)
        (on_first,), (on_second,) = first.active_connections, second.active_connections
        groups = [f"room{number}" for number in range(GROUPS)]

        async def join_both(group: str) -> list[bool]:
            return sorted(
                await asyncio.gather(
                    first.presence_join(group, on_first, "alice"),
                    second.presence_join(group, on_second, "alice"),
                )
            )

        async def leave_both(group: str) -> list[bool]:
            return sorted(
                await asyncio.gather(
                    first.presence_leave(group, on_first), second.presence_leave(group, on_second)
                )
            )

        assert await asyncio.gather(*map(join_both, groups)) == [[False, True]] * GROUPS
        for group in groups:
            assert await first.presence_members(group) == await second.presence_members(group) == {"alice"}
        assert await asyncio.gather(*map(leave_both, groups)) == [[False, True]] * GROUPS


async def test_members_whose_entries_expire_are_reported_gone_by_one_surviving_instance(
    broker_url: str, broker_channel: str
) -> None:
    """A dead instance's entries are not refreshed: the survivors' heartbeat evicts them and says so."""
    changes = Changes()
    survivors = 2 if broker_url.startswith("redis") else 1
    async with AsyncExitStack() as stack:
        managers: list[WebSocketManager] = []
        endpoints = {}
        for number in range(survivors):
            manager = WebSocketManager(
                broker_channel, broker_url, presence_ttl=0.3, on_presence_change=changes
            )
            managers.append(await stack.enter_async_context(manager))
            endpoints[f"/{number}"] = library_endpoint(manager)
        url = await stack.enter_async_context(serve(endpoints))
        for number in range(survivors):
            await stack.enter_async_context(connect(f"{url}/{number}"))
        await eventually(lambda: all(len(manager) == 1 for manager in managers))
        for manager in managers:
            (connection,) = manager.active_connections
            await manager.presence_join("room", connection, "bob")

        dead = managers[0].broker
        if isinstance(dead, RedisBroker):
            dead = await stack.enter_async_context(connected(RedisBroker(broker_url)))
        key = f"{broker_channel}:presence:room"
        entries = {"dead1": "ghost", "dead2": "ghost", "dead3": "carol"}
        await dead.presence_update(key, add=entries, ttl=30)
        assert await managers[0].presence_members("room") == {"bob", "ghost", "carol"}
        await dead.presence_update(key, add=entries, ttl=0.2)  # the dead instance's last heartbeat

        await eventually(lambda: bool(changes), seconds=3)
        for manager in managers:  # every survivor's heartbeat has run again since: none reports it twice
            await manager._presence.heartbeat()
        gone = PresenceChange("room", joined=frozenset(), left=frozenset({"ghost", "carol"}))
        assert [change for _, change in changes] == [gone]
        assert await managers[-1].presence_members("room") == {"bob"}

        # A connection the manager removes without leaving first: its departure is a change too.
        connection: Connection = next(iter(managers[0].active_connections))
        await managers[0].remove_connection(connection)
        if survivors == 1:
            assert changes[-1] == (
                managers[0],
                PresenceChange("room", joined=frozenset(), left=frozenset({"bob"})),
            )
        else:
            assert len(changes) == 1  # bob is still there, on the other instance
