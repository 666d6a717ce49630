"""The message log: a room's messages stored a batch per transaction, handed back in seq order, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from {{ cookiecutter.package_name }}.db import messages, rooms
from {{ cookiecutter.package_name }}.db.message_log import MessageLog
from {{ cookiecutter.package_name }}.db.models import Message, User
from {{ cookiecutter.package_name }}.db.refs import RoomRecord, UserRecord

from .support import AuthHeaders


@pytest.fixture
async def room_and_author(
    client: AsyncClient, auth_headers: AuthHeaders, session_factory: async_sessionmaker[AsyncSession]
) -> tuple[RoomRecord, UserRecord]:
    alice = await auth_headers("alice")
    created = await client.post("/rooms", json={"name": "lobby", "title": "The lobby"}, headers=alice)
    assert created.status_code == 201, created.text
    async with session_factory() as session:
        room = await rooms.get_room(session, name="lobby")
        user = await session.scalar(select(User).where(User.username == "alice"))
        assert room is not None
        assert user is not None
        return RoomRecord.of(room), UserRecord.of(user)


class Commits:
    """The transactions committed on the app's engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        event.listen(engine.sync_engine, "commit", self._committed)

    def _committed(self, connection: object) -> None:
        self.count += 1


class Author:
    """What a poster hears back: the messages stored and the errors, each in the order they came."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.errors: list[Exception] = []
        self.heard = asyncio.Event()

    async def stored(self, message: Message) -> None:
        self.messages.append(message)
        self.heard.set()

    async def failed(self, error: Exception) -> None:
        self.errors.append(error)
        self.heard.set()

    async def hold_the_room(self, log: MessageLog, room: RoomRecord, user: UserRecord) -> asyncio.Event:
        """Post "first", whose `stored` callback keeps the room's task waiting, with nothing more taken from
        the room meanwhile, until the event returned is set; return once the task waits there."""
        holding, release = asyncio.Event(), asyncio.Event()

        async def held(message: Message) -> None:
            holding.set()
            await release.wait()
            await self.stored(message)

        await log.post(room, user, "first", stored=held, failed=self.failed)
        async with asyncio.timeout(10):
            await holding.wait()
        return release

    async def wait_for(self, count: int) -> None:
        """Until `count` messages or errors came back in all."""
        async with asyncio.timeout(10):
            while len(self.messages) + len(self.errors) < count:
                self.heard.clear()
                await self.heard.wait()


async def stored_texts(session_factory: async_sessionmaker[AsyncSession], room: RoomRecord) -> list[str]:
    async with session_factory() as session:
        return [message.text for message in await messages.list_messages(session, room=room)]


@pytest.mark.parametrize(
    ("max_batch", "posts", "transactions"), [(100, 20, 1), (4, 10, 3)], ids=["one-batch", "max-batch"]
)
async def test_a_burst_is_stored_a_batch_per_transaction_and_handed_back_in_seq_order(
    app: FastAPI,
    room_and_author: tuple[RoomRecord, UserRecord],
    session_factory: async_sessionmaker[AsyncSession],
    max_batch: int,
    posts: int,
    transactions: int,
) -> None:
    room, user = room_and_author
    log, author = MessageLog(session_factory, max_batch=max_batch), Author()
    commits = Commits(app.state.engine)
    texts = [f"message {number}" for number in range(posts)]
    for text in texts:
        await log.post(room, user, text, stored=author.stored, failed=author.failed)
    await author.wait_for(posts)
    assert commits.count == transactions
    assert [(message.seq, message.text) for message in author.messages] == list(enumerate(texts, start=1))
    assert await stored_texts(session_factory, room) == texts
    assert log.waiting == 0


async def test_a_batchs_callbacks_start_in_seq_order_and_run_together(
    room_and_author: tuple[RoomRecord, UserRecord], session_factory: async_sessionmaker[AsyncSession]
) -> None:
    """What the callbacks of a batch publish goes to the broker together: each is started, in seq order,
    before any has returned; the room's next batch is stored once they all have."""
    room, user = room_and_author
    log, author = MessageLog(session_factory), Author()
    release = await author.hold_the_room(log, room, user)
    started: list[int] = []
    all_started, go_on = asyncio.Event(), asyncio.Event()

    async def waits_for_the_others(message: Message) -> None:
        started.append(message.seq)
        if len(started) == 4:
            all_started.set()
        await go_on.wait()
        await author.stored(message)

    for text in ("a", "b", "c", "d"):
        await log.post(room, user, text, stored=waits_for_the_others, failed=author.failed)
    release.set()
    async with asyncio.timeout(10):
        await all_started.wait()
    assert started == [2, 3, 4, 5]
    await log.post(room, user, "next", stored=author.stored, failed=author.failed)
    await asyncio.sleep(0.2)
    assert await stored_texts(session_factory, room) == ["first", "a", "b", "c", "d"]
    go_on.set()
    await author.wait_for(6)
    assert [(message.seq, message.text) for message in author.messages] == list(
        enumerate(["first", "a", "b", "c", "d", "next"], start=1)
    )


async def test_posters_wait_while_the_room_holds_max_queued_messages(
    room_and_author: tuple[RoomRecord, UserRecord], session_factory: async_sessionmaker[AsyncSession]
) -> None:
    room, user = room_and_author
    log, author = MessageLog(session_factory, max_queued=3), Author()
    release = await author.hold_the_room(log, room, user)
    for text in ("a", "b", "c"):
        await log.post(room, user, text, stored=author.stored, failed=author.failed)
    blocked = asyncio.create_task(log.post(room, user, "d", stored=author.stored, failed=author.failed))
    await asyncio.sleep(0.2)
    assert not blocked.done()
    assert log.waiting == 3
    release.set()
    async with asyncio.timeout(10):
        await blocked
    await author.wait_for(5)
    assert [message.text for message in author.messages] == ["first", "a", "b", "c", "d"]
    assert await stored_texts(session_factory, room) == ["first", "a", "b", "c", "d"]


async def test_a_failed_batch_is_reported_to_each_poster_and_the_room_goes_on(
    room_and_author: tuple[RoomRecord, UserRecord], session_factory: async_sessionmaker[AsyncSession]
) -> None:
    room, user = room_and_author
    gone = RoomRecord(id=room.id + 1000, name="gone")
    log, author = MessageLog(session_factory), Author()
    for text in ("lost 1", "lost 2"):
        await log.post(gone, user, text, stored=author.stored, failed=author.failed)
    await author.wait_for(2)
    assert [type(error) for error in author.errors] == [LookupError, LookupError]
    await log.post(room, user, "kept", stored=author.stored, failed=author.failed)
    await author.wait_for(3)
    assert [(message.seq, message.text) for message in author.messages] == [(1, "kept")]


async def test_a_callback_that_raises_does_not_stop_the_rooms_other_messages(
    room_and_author: tuple[RoomRecord, UserRecord],
    session_factory: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    room, user = room_and_author
    log, author = MessageLog(session_factory), Author()

    async def broken(message: Message) -> None:
        raise RuntimeError("the poster's callback failed")

    callbacks: list[Callable[[Message], Awaitable[None]]] = [broken, author.stored, broken, author.stored]
    for number, stored in enumerate(callbacks):
        await log.post(room, user, str(number), stored=stored, failed=author.failed)
    await author.wait_for(2)
    assert [message.seq for message in author.messages] == [2, 4]
    assert caplog.text.count("RuntimeError: the poster's callback failed") == 2


async def test_closing_stores_what_is_queued(
    room_and_author: tuple[RoomRecord, UserRecord], session_factory: async_sessionmaker[AsyncSession]
) -> None:
    room, user = room_and_author
    log, author = MessageLog(session_factory), Author()
    for text in ("x", "y"):
        await log.post(room, user, text, stored=author.stored, failed=author.failed)
    await log.aclose(5.0)
    assert len(author.messages) == 2
    assert await stored_texts(session_factory, room) == ["x", "y"]


async def test_the_messages_waiting_are_measured(
    app: FastAPI, client: AsyncClient, room_and_author: tuple[RoomRecord, UserRecord]
) -> None:
    room, user = room_and_author
    log: MessageLog = app.state.message_log
    author = Author()

    async def waiting() -> float:
        exposition = (await client.get("/metrics")).text
        [line] = [line for line in exposition.splitlines() if line.startswith("chat_messages_waiting ")]
        return float(line.split()[1])

    assert await waiting() == 0
    release = await author.hold_the_room(log, room, user)
    for text in ("a", "b", "c"):
        await log.post(room, user, text, stored=author.stored, failed=author.failed)
    assert await waiting() == 3
    release.set()
    await author.wait_for(4)
    assert await waiting() == 0
