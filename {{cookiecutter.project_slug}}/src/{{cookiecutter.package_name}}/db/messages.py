"""Chat messages: storing them with the room's next seq, and reading a room's history by seq."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Message, Room
from .refs import RoomRef, UserRef


async def create_message(session: AsyncSession, *, room: RoomRef, user: UserRef, text: str) -> Message:
    """Store and commit the message with the room's next `seq`.

    The seq comes from incrementing the room's `last_seq` in the same transaction: the row lock this takes
    makes concurrent messages of a room commit one after the other, so seqs are contiguous and a message
    with a larger seq never commits before one with a smaller. `room` and `user` are referenced by id and
    never added to `session`, so objects loaded once (say, when a WebSocket connects), or their records,
    can be passed here from any number of concurrent sessions. The message's `room` and `user` are not
    loaded: the caller has them.
    """
    seq = await session.scalar(
        update(Room).where(Room.id == room.id).values(last_seq=Room.last_seq + 1).returning(Room.last_seq)
    )
    if seq is None:
        raise LookupError(f"room {room.name!r} no longer exists")
    message = Message(room_id=room.id, seq=seq, user_id=user.id, text=text)
    session.add(message)
    await session.commit()
    return message


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
