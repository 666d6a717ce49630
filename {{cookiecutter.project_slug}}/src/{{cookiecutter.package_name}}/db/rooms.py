"""Rooms and their members. Public rooms are open to every user; private ones to their members only."""

from __future__ import annotations

import functools
import time

from sqlalchemy import not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .errors import commit_new
from .models import Membership, Role, Room, User
from .refs import RoomRef, UserRef
from .shared_reads import SharedReads


async def get_room(session: AsyncSession, *, name: str) -> Room | None:
    return await session.scalar(select(Room).where(Room.name == name))


async def get_membership(session: AsyncSession, *, room: RoomRef, user: UserRef) -> Membership | None:
    return await session.get(Membership, (room.id, user.id))


async def get_visible_room(session: AsyncSession, *, name: str, user: UserRef) -> Room | None:
    """The room if it exists and `user` may read and write in it: it is public or they are a member."""
    room = await get_room(session, name=name)
    if room is None or not room.is_private:
        return room
    return room if await get_membership(session, room=room, user=user) is not None else None


async def list_visible_rooms(session: AsyncSession, *, user: User) -> list[Room]:
    """Every public room and every room `user` is a member of, by name."""
    member_of = select(Membership.room_id).where(Membership.user_id == user.id)
    query = select(Room).where(or_(not_(Room.is_private), Room.id.in_(member_of))).order_by(Room.name)
    return list(await session.scalars(query))


async def create_room(session: AsyncSession, *, name: str, title: str, is_private: bool, owner: User) -> Room:
    """The new room, with `owner` as its first member. Raises `AlreadyExistsError` when the name is taken."""
    room = Room(name=name, title=title, is_private=is_private, owner=owner)
    session.add_all([room, Membership(room=room, user=owner, role=Role.OWNER)])
    await commit_new(session, conflict=f"A room named {name!r} already exists")
    return room


async def add_member(
    session: AsyncSession, *, room: Room, user: User, role: Role = Role.MEMBER
) -> Membership:
    """Raises `AlreadyExistsError` when `user` is a member already."""
    membership = Membership(room=room, user=user, role=role)
    session.add(membership)
    await commit_new(session, conflict=f"{user.username!r} is already a member of {room.name!r}")
    return membership


class RoomReads:
    """The rooms the chat's handshakes look up, each read from the database at most once every `reuse_for`
    seconds, and once for the handshakes that ask at the same time: a room filling up in a connection storm
    reads its record once, not once per connection.

    Only public rooms are kept: rooms are neither deleted nor made private through the API, and a change made
    in the database directly is seen at most `reuse_for` seconds later. Whether a user is a member of a
    private room is read every time. The room objects are shared, which `messages.create_message` allows.
    """

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], reuse_for: float) -> None:
        self.session_factory = session_factory
        self.reuse_for = reuse_for
        self._read: dict[str, tuple[Room, float]] = {}
        self._reading: SharedReads[str, Room | None] = SharedReads("room-read")

    async def visible_room(self, *, name: str, user: UserRef) -> Room | None:
        """The room if it exists and `user` may read and write in it (see `get_visible_room`)."""
        if self.reuse_for <= 0:
            async with self.session_factory() as session:
                return await get_visible_room(session, name=name, user=user)
        room = await self._room(name)
        if room is None or not room.is_private:
            return room
        async with self.session_factory() as session:
            return room if await get_membership(session, room=room, user=user) is not None else None

    async def _room(self, name: str) -> Room | None:
        read = self._read.get(name)
        if read is not None and time.monotonic() - read[1] < self.reuse_for:
            return read[0]
        return await self._reading.read(name, functools.partial(self._read_room, name))

    async def _read_room(self, name: str) -> Room | None:
        read_at = time.monotonic()
        async with self.session_factory() as session:
            room = await get_room(session, name=name)
        for stale in [key for key, (_, at) in self._read.items() if read_at - at >= self.reuse_for]:
            del self._read[stale]
        if room is not None and not room.is_private:
            self._read[name] = (room, read_at)
        return room
