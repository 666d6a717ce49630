"""Presence across instances: each arrival and departure reported once, even when a whole instance dies."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import redis
from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }}.realtime import Connection, PresenceChange, RedisBroker, WebSocketManager

from ..hardening.faults import PrivateRedis
from .support import eventually, library_endpoint, serve

GROUPS = 20
STORM_CONNECTIONS = 60
STORM_USERS = 6


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis server of this test's own, whose command counts no other test adds to; skipped without
    `redis-server`, unless `REQUIRE_SERVICES=1`."""
    try:
        server = PrivateRedis(tmp_path)
    except FileNotFoundError as error:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"{error} (REQUIRE_SERVICES=1)")
        pytest.skip(str(error))
    with server:
        yield server


def script_calls(server: PrivateRedis) -> int:
    """How many Lua scripts (presence updates and reads) the server has run."""
    client = redis.Redis.from_url(server.url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


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


@asynccontextmanager
async def three_connections(manager: WebSocketManager) -> AsyncIterator[list[Connection]]:
    """Three clients of `manager`, as its connections."""
    async with serve({"/ws": library_endpoint(manager)}) as url, AsyncExitStack() as stack:
        for _ in range(3):
            await stack.enter_async_context(connect(f"{url}/ws"))
        await eventually(lambda: len(manager) == 3)
        yield list(manager.active_connections)


async def test_a_member_counts_once_and_leaves_with_their_last_connection(manager: WebSocketManager) -> None:
    async with three_connections(manager) as (tab1, tab2, other):
        assert await manager.presence_join("room", tab1, "alice") is True
        assert await manager.presence_join("room", tab2, "alice") is False
        assert await manager.presence_join("room", other, "bob") is True
        assert await manager.presence_members("room") == {"alice", "bob"}
        assert await manager.presence_leave("room", tab1) is False
        assert await manager.presence_leave("room", tab2) is True
        assert await manager.presence_leave("room", tab2) is False
        await manager.remove_connection(other)
        assert await manager.presence_members("room") == set()


async def test_a_join_counts_the_members_present_after_it(manager: WebSocketManager) -> None:
    async with three_connections(manager) as (first, second, third):
        assert await manager.presence_join_and_count("tabs", first, "t1") == 1
        assert await manager.presence_join_and_count("tabs", second, "t2") == 2
        assert await manager.presence_join_and_count("tabs", second, "t2") == 2
        await manager.presence_leave("tabs", first)
        assert await manager.presence_join_and_count("tabs", third, "t3") == 2


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


async def test_connections_joining_one_group_at_once_share_presence_updates(
    redis_server: PrivateRedis, broker_channel: str
) -> None:
    """A room filling up is a few presence updates in the broker, not one per connection made one after
    the other: when they queued, a connection storm announced its users seconds late, to every connection
    that came meanwhile. Each user is still announced once, by one of their connections."""
    async with (
        WebSocketManager(broker_channel, redis_server.url, presence_ttl=3600) as manager,
        serve({"/ws": library_endpoint(manager)}) as url,
        AsyncExitStack() as stack,
    ):
        for _ in range(STORM_CONNECTIONS):
            await stack.enter_async_context(connect(f"{url}/ws"))
        await eventually(lambda: len(manager) == STORM_CONNECTIONS)
        connections = list(manager.active_connections)
        users = [f"user{number % STORM_USERS}" for number in range(STORM_CONNECTIONS)]
        await manager.presence_join("elsewhere", connections[0], "warm-up")  # loads the script
        before = script_calls(redis_server)

        pairs = zip(connections, users, strict=True)
        joins = (manager.presence_join("room", each, user) for each, user in pairs)
        joined = await asyncio.gather(*joins)
        assert script_calls(redis_server) - before <= 2
        assert sorted(user for user, came in zip(users, joined, strict=True) if came) == sorted(set(users))
        before = script_calls(redis_server)
        reads = await asyncio.gather(*(manager.presence_members("room") for _ in connections))
        assert script_calls(redis_server) - before <= 2
        assert reads == [set(users)] * STORM_CONNECTIONS

        before = script_calls(redis_server)
        left = await asyncio.gather(*(manager.presence_leave("room", each) for each in connections))
        assert script_calls(redis_server) - before <= 2
        assert sorted(user for user, gone in zip(users, left, strict=True) if gone) == sorted(set(users))
        assert await manager.presence_members("room") == set()


async def test_a_heartbeat_never_adds_back_an_entry_that_left_while_it_ran(manager: WebSocketManager) -> None:
    async with serve({"/ws": library_endpoint(manager)}) as url, connect(f"{url}/ws"), connect(f"{url}/ws"):
        await eventually(lambda: len(manager) == 2)
        staying, leaving = manager.active_connections
        await manager.presence_join("room", staying, "alice")
        await manager.presence_join("room", leaving, "bob")
        heartbeat = asyncio.create_task(manager._presence.heartbeat())
        assert await manager.presence_leave("room", leaving) is True
        await heartbeat
        assert await manager.presence_members("room") == {"alice"}
        await manager._presence.heartbeat()
        assert await manager.presence_members("room") == {"alice"}
