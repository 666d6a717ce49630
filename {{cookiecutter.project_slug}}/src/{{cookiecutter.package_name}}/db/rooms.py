"""Rooms and their members. Public rooms are open to every user; private ones to their members only."""

from __future__ import annotations

from sqlalchemy import not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from .errors import commit_new
from .models import Membership, Role, Room, User
from .refs import RoomRef, UserRef


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
