"""Chat messages: storing them with the room's next seq, and reading a room's history by seq."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Message, Room
from .refs import RoomRef, UserRef


async def create_message(session: AsyncSession, *, room: RoomRef, user: UserRef, text: str) -> Message:
    """Store and commit one message with the room's next `seq` (see `create_messages`)."""
    [message] = await create_messages(session, room=room, drafts=[(user, text)])
    return message


async def create_messages(
    session: AsyncSession, *, room: RoomRef, drafts: Sequence[tuple[UserRef, str]]
) -> list[Message]:
    """Store and commit messages (each an author and a text) with the room's next seqs, in their order.

    The seqs come from adding their number to the room's `last_seq` in the same transaction: the row lock
    this takes makes concurrent writes to a room commit one after the other, so seqs are contiguous and a
    message with a larger seq never commits before one with a smaller. `room` and the authors are
    referenced by id and never added to `session`, so objects loaded once (say, when a WebSocket connects),
    or their records, can be passed here from any number of concurrent sessions. The messages' `room` and
    `user` are not loaded: the caller has them.
    """
    if not drafts:
        return []
    last = await session.scalar(
        update(Room)
        .where(Room.id == room.id)
        .values(last_seq=Room.last_seq + len(drafts))
        .returning(Room.last_seq)
    )
    if last is None:
        raise LookupError(f"room {room.name!r} no longer exists")
    first = last - len(drafts) + 1
    stored = [
        Message(room_id=room.id, seq=seq, user_id=user.id, text=text)
        for seq, (user, text) in enumerate(drafts, start=first)
    ]
    session.add_all(stored)
    await session.commit()
    return stored


async def last_seq(session: AsyncSession, *, room: RoomRef) -> int:
    """The seq of the room's latest stored message, 0 if it has none."""
    return await session.scalar(select(Room.last_seq).where(Room.id == room.id)) or 0


async def list_messages(
    session: AsyncSession,
    *,
    room: RoomRef,
    after: int | None = None,
    before: int | None = None,
    limit: int | None = None,
) -> list[Message]:
    """Messages of `room` with a seq strictly between `after` and `before`, oldest first.

    With `after`, the `limit` oldest of them, so that paging forward (or replaying from a seq) continues
    from there; without it, the `limit` newest, so that paging backward with `before` reads older history.
    No `limit` means all of them.
    """
    query = select(Message).where(Message.room_id == room.id)
    if after is not None:
        query = query.where(Message.seq > after)
    if before is not None:
        query = query.where(Message.seq < before)
    newest_first = after is None
    query = query.order_by(Message.seq.desc() if newest_first else Message.seq).limit(limit)
    found = list(await session.scalars(query))
    return found[::-1] if newest_first else found


async def seq_after_id(session: AsyncSession, *, room: RoomRef, message_id: int) -> int:
    """The seq to resume after for a client that gives the id of the last message it has (the protocol
    before seqs): the largest seq among the room's messages with an id up to it."""
    query = select(func.max(Message.seq)).where(Message.room_id == room.id, Message.id <= message_id)
    return await session.scalar(query) or 0
