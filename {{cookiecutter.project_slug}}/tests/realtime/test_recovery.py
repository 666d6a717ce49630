"""Recoverable groups, on the engine alone: a history kept in a list, events published (or not) by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from {{ cookiecutter.package_name }}.realtime import Frame, JsonConsumer, RecoveryOptions, WebSocketManager

from .support import receive_json, serve


class ListHistory:
    """A group's events in memory: `store` assigns the next seq, as a database would."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.reads = 0

    def store(self, text: str) -> dict[str, Any]:
        event = {"type": "note", "seq": len(self.events) + 1, "text": text}
        self.events.append(event)
        return event

    async def head(self, group: str) -> int:
        return len(self.events)

    async def read(self, group: str, *, after: int, limit: int) -> Sequence[Frame]:
        self.reads += 1
        return self.events[after : after + limit]


def recoverable_endpoint(manager: WebSocketManager, history: ListHistory, event_type: str = "note") -> Any:
    class NotesConsumer(JsonConsumer):
        async def connect(self) -> None:
            await self.accept()
            since = self.websocket.query_params.get("since")
            await self.join_recoverable(
                "notes", history, event_type=event_type, since=int(since) if since is not None else None
            )
            await self.send_json({"type": "joined"})

    return NotesConsumer.as_endpoint(manager)


async def seqs(client: ClientConnection, count: int) -> list[int]:
    return [(await receive_json(client))["seq"] for _ in range(count)]


@asynccontextmanager
async def joined_clients(url: str, count: int) -> AsyncIterator[list[ClientConnection]]:
    """`count` clients of `url`, each told it joined."""
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(url)) for _ in range(count)]
        for client in clients:
            assert (await receive_json(client))["type"] == "joined"
        yield clients


async def test_gaps_are_filled_duplicates_dropped_and_what_was_kept_aside_stays_bounded(
    manager: WebSocketManager,
) -> None:
    manager.recovery.options = RecoveryOptions(gap_wait=0.05, max_ahead=2)
    history = ListHistory()
    async with (
        serve({"/ws": recoverable_endpoint(manager, history)}) as url,
        connect(f"{url}/ws") as client,
    ):
        assert (await receive_json(client))["type"] == "joined"
        lost = [history.store(f"lost {number}") for number in range(3)]
        published = [history.store(f"published {number}") for number in range(4)]
        for event in [*published, published[0], lost[1]]:  # ahead of a gap, then duplicates
            await manager.group_send("notes", event)
        assert await seqs(client, 7) == [1, 2, 3, 4, 5, 6, 7]
        await manager.group_send("notes", history.store("next"))
        assert await seqs(client, 1) == [8]


async def test_a_replay_beyond_the_window_is_truncated_then_live_events_follow(
    manager: WebSocketManager,
) -> None:
    manager.recovery.options = RecoveryOptions(max_replay=3)
    history = ListHistory()
    for number in range(10):
        history.store(str(number))
    async with (
        serve({"/ws": recoverable_endpoint(manager, history)}) as url,
        connect(f"{url}/ws?since=2") as client,
    ):
        assert await receive_json(client) == {"type": "history.truncated", "oldest_seq": 8}
        assert await seqs(client, 3) == [8, 9, 10]
        assert (await receive_json(client))["type"] == "joined"
        await manager.group_send("notes", history.store("live"))
        assert await seqs(client, 1) == [11]


async def test_members_healing_at_once_share_one_read_and_a_lost_last_event_arrives(
    manager: WebSocketManager,
) -> None:
    manager.recovery.options = RecoveryOptions(heal_interval=0.1)
    history = ListHistory()
    async with (
        serve({"/ws": recoverable_endpoint(manager, history)}) as url,
        joined_clients(f"{url}/ws", 5) as clients,
    ):
        history.store("never published")  # the last one: no later event shows the gap
        async with asyncio.timeout(10):
            received = [await seqs(client, 1) for client in clients]
        assert received == [[1]] * 5
        assert history.reads == 1


class SlowHeadHistory(ListHistory):
    """A history whose head takes a database's round trip to read."""

    def __init__(self) -> None:
        super().__init__()
        self.head_reads = 0

    async def head(self, group: str) -> int:
        self.head_reads += 1
        await asyncio.sleep(0.05)
        return await super().head(group)


async def test_a_storm_of_members_joining_reads_the_head_once_a_round_trip_and_misses_nothing(
    manager: WebSocketManager,
) -> None:
    """Each join reads the head before and after it joins: 40 reads, had each its own."""
    history = SlowHeadHistory()
    history.store("before")
    async with (
        serve({"/ws": recoverable_endpoint(manager, history)}) as url,
        AsyncExitStack() as stack,
    ):
        clients = await asyncio.gather(*(stack.enter_async_context(connect(f"{url}/ws")) for _ in range(20)))
        for client in clients:
            assert (await receive_json(client))["type"] == "joined"
        assert history.head_reads <= 10
        await manager.group_send("notes", history.store("after"))
        assert [await seqs(client, 1) for client in clients] == [[2]] * 20


async def test_members_in_step_get_events_as_they_come_and_fill_a_gap_from_the_history(
    manager: WebSocketManager,
) -> None:
    manager.recovery.options = RecoveryOptions(gap_wait=0.05)
    history = ListHistory()
    async with (
        serve({"/ws": recoverable_endpoint(manager, history)}) as url,
        joined_clients(f"{url}/ws", 3) as clients,
    ):
        first = history.store("first")
        await manager.group_send("notes", first)
        assert [await seqs(client, 1) for client in clients] == [[1]] * 3
        stream = manager.recovery.streams["notes"]
        assert len(stream.in_step) == 3  # their seqs are checked once for all of them
        second, _lost, fourth = (history.store(text) for text in ("second", "lost", "fourth"))
        for event in (second, first, fourth):  # then one heard before, then one ahead of a gap
            await manager.group_send("notes", event)
        assert [await seqs(client, 3) for client in clients] == [[2, 3, 4]] * 3
        await manager.group_send("notes", history.store("fifth"))
        assert [await seqs(client, 1) for client in clients] == [[5]] * 3
        await manager.group_send("notes", history.store("sixth"))
        assert [await seqs(client, 1) for client in clients] == [[6]] * 3
        assert len(stream.in_step) == 3  # back in step once the gap was filled


async def test_a_lost_last_event_and_a_heal_reach_members_in_step(manager: WebSocketManager) -> None:
    manager.recovery.options = RecoveryOptions(heal_interval=0.1)
    history = ListHistory()
    async with (
        serve({"/ws": recoverable_endpoint(manager, history)}) as url,
        joined_clients(f"{url}/ws", 3) as clients,
    ):
        await manager.group_send("notes", history.store("published"))
        assert [await seqs(client, 1) for client in clients] == [[1]] * 3
        history.store("never published")
        async with asyncio.timeout(10):
            assert [await seqs(client, 1) for client in clients] == [[2]] * 3
        history.store("stored while the broker was down")
        assert manager.recovery.heal_group("notes")
        assert [await seqs(client, 1) for client in clients] == [[3]] * 3
        for _ in range(2):
            await manager.group_send("notes", history.store("live"))
        assert [await seqs(client, 2) for client in clients] == [[4, 5]] * 3


async def test_the_sequenced_events_of_a_group_are_of_one_type(manager: WebSocketManager) -> None:
    history = ListHistory()
    routes = {
        "/notes": recoverable_endpoint(manager, history),
        "/other": recoverable_endpoint(manager, history, event_type="other"),
    }
    async with serve(routes) as url, connect(f"{url}/notes") as notes:
        assert (await receive_json(notes))["type"] == "joined"
        async with connect(f"{url}/other") as other:
            async with asyncio.timeout(10):
                await other.wait_closed()
            assert other.close_code == 1011
        await manager.group_send("notes", history.store("still here"))
        assert await seqs(notes, 1) == [1]
