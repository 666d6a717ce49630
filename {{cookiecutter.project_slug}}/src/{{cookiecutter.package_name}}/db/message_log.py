"""Messages posted to rooms, stored a batch at a time: what a room's authors post while one transaction
commits goes into the next, together.

Storing a message costs a transaction a few round trips to the database (or hops to SQLite's thread), far
more than its row: under a fan-out they cost more than the message's writes to a thousand sockets
(docs/PERFORMANCE.md, "Messages stored together"). So a room's messages are queued, and one task per room
with messages waiting stores all that are queued (up to `max_batch`) in one transaction, as databases
commit in groups: one message alone is stored at once, and a burst, from one client or many, costs a
transaction per batch. A poster does not wait for the store, so the next frame of its connection is read
meanwhile. Once a batch is committed, the room's task hands each message to its poster's `stored`
callback, all of the batch's callbacks started in the room's seq order and run together: what each
publishes before it first waits goes to the broker in that order, in one round trip to Redis, so that every
instance fans the batch out in one round (several messages to a socket in one write). The room's next batch
is stored once they have all returned. A batch that could not be stored is reported to each `failed`, in
order, one after the other.

A room holds at most `max_queued` messages not yet stored: past it, `post` waits until a batch is taken,
so a client sending faster than its room is stored stops being read.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .messages import create_messages
from .models import Message
from .refs import RoomRef, UserRef

__all__ = ["MessageLog"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Post:
    user: UserRef
    text: str
    stored: Callable[[Message], Awaitable[None]]
    failed: Callable[[Exception], Awaitable[None]]


class _Room:
    """A room's messages waiting to be stored, the task storing them, and the posters waiting for room."""

    __slots__ = ("posts", "ref", "task", "waiters")

    def __init__(self, ref: RoomRef) -> None:
        self.ref = ref
        self.posts: deque[_Post] = deque()
        self.task: asyncio.Task[None] | None = None
        self.waiters: list[asyncio.Future[None]] = []


class MessageLog:
    """The messages posted to each room of this instance, stored in batches, in the order they were posted."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        max_batch: int = 100,
        max_queued: int = 1000,
    ) -> None:
        if max_batch < 1 or max_queued < 1:
            raise ValueError("max_batch and max_queued must be at least 1")
        self.session_factory = session_factory
        self.max_batch = max_batch
        self.max_queued = max_queued
        self._rooms: dict[int, _Room] = {}

    async def post(
        self,
        room: RoomRef,
        user: UserRef,
        text: str,
        *,
        stored: Callable[[Message], Awaitable[None]],
        failed: Callable[[Exception], Awaitable[None]],
    ) -> None:
        """Queue a message for `room`: `stored(message)` is called once it is committed with its seq, or
        `failed(error)` if its batch could not be. Returns at once, unless the room has `max_queued`
        messages waiting: then once a batch has been taken from them."""
        while True:
            queued = self._rooms.get(room.id)
            if queued is None:
                queued = self._rooms[room.id] = _Room(room)
            if len(queued.posts) < self.max_queued:
                break
            waiter = asyncio.get_running_loop().create_future()
            queued.waiters.append(waiter)
            await waiter
        queued.posts.append(_Post(user, text, stored, failed))
        if queued.task is None:
            queued.task = asyncio.create_task(self._store(queued), name=f"message-log-{room.name}")

    @property
    def waiting(self) -> int:
        """Messages posted and not yet stored, in every room."""
        return sum(len(queued.posts) for queued in self._rooms.values())

    async def aclose(self, grace_seconds: float) -> None:
        """Store what is queued, waiting at most `grace_seconds`; what is left then is not stored."""
        tasks = [queued.task for queued in self._rooms.values() if queued.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning("%d rooms still had messages to store at shutdown", len(pending))
            await asyncio.wait(pending)

    async def _store(self, queued: _Room) -> None:
        posts = queued.posts
        try:
            while posts:
                batch = [posts.popleft() for _ in range(min(len(posts), self.max_batch))]
                waiters, queued.waiters = queued.waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                try:
                    async with self.session_factory() as session:
                        messages = await create_messages(
                            session, room=queued.ref, drafts=[(post.user, post.text) for post in batch]
                        )
                except Exception as error:  # noqa: BLE001 - each poster is told; the room's next batch is tried
                    for post in batch:
                        await _hand_over(post.failed(error))
                    continue
                await asyncio.gather(
                    *(_hand_over(post.stored(message)) for post, message in zip(batch, messages, strict=True))
                )
        finally:
            if self._rooms.get(queued.ref.id) is queued:
                del self._rooms[queued.ref.id]


async def _hand_over(call: Awaitable[None]) -> None:
    """Await a poster's callback; what it raises is logged, and the room's other messages go on."""
    try:
        await call
    except Exception:
        logger.exception("a callback of a stored message failed")
