"""Chat messages: storing them, and reading a room's history by id."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from .models import Message, Room, User


async def create_message(session: AsyncSession, *, room: Room, user: User, text: str) -> Message:
    """Store and commit the message; its `id` is set and larger than that of every earlier message.

    `room` and `user` are referenced by id and never added to `session`, so objects loaded once (say, when
    a WebSocket connects) can be passed here from any number of concurrent sessions.
    """
    message = Message(room_id=room.id, user_id=user.id, text=text)
    session.add(message)
    await session.commit()
    set_committed_value(message, "room", room)
    set_committed_value(message, "user", user)
    return message


async def list_messages(
    session: AsyncSession,
    *,
    room: Room,
    after: int | None = None,
    before: int | None = None,
    limit: int | None = None,
) -> list[Message]:
    """Messages of `room` with an id strictly between `after` and `before`, oldest first.

    With `after`, the `limit` oldest of them, so that paging forward (or replaying from an id) continues
    from there; without it, the `limit` newest, so that paging backward with `before` reads older history.
    No `limit` means all of them.
    """
    query = select(Message).where(Message.room_id == room.id)
    if after is not None:
        query = query.where(Message.id > after)
    if before is not None:
        query = query.where(Message.id < before)
    newest_first = after is None
    query = query.order_by(Message.id.desc() if newest_first else Message.id).limit(limit)
    found = list(await session.scalars(query))
    return found[::-1] if newest_first else found
