"""Rooms, their members and their message history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from ..db import messages, rooms, users
from ..db.errors import AlreadyExistsError
from ..db.models import MAX_SEQ, Room
from ..deps import CurrentUser, SessionDep
from ..schemas import (
    NO_NUL_PATTERN,
    ErrorResponse,
    MembershipCreate,
    MembershipPublic,
    MessagePublic,
    RoomCreate,
    RoomPublic,
)

MAX_PAGE_SIZE = 100


Responses = dict[int | str, dict[str, Any]]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


UNAUTHORIZED: Responses = {status.HTTP_401_UNAUTHORIZED: _error("Missing or bad token")}
ROOM_NOT_FOUND: Responses = {
    status.HTTP_404_NOT_FOUND: _error("No such room, or it is private and the user is not a member")
}
ROOM_OR_USER_NOT_FOUND: Responses = {
    status.HTTP_404_NOT_FOUND: _error(
        "No such room, or it is private and the user is not a member; or no such user"
    )
}

router = APIRouter(prefix="/rooms", tags=["rooms"], responses=UNAUTHORIZED)


async def get_visible_room(
    room: Annotated[str, Path(description="The room's name", pattern=NO_NUL_PATTERN, examples=["lobby"])],
    session: SessionDep,
    user: CurrentUser,
) -> Room:
    found = await rooms.get_visible_room(session, name=room, user=user)
    if found is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"Room {room!r} not found")
    return found


VisibleRoom = Annotated[Room, Depends(get_visible_room)]


@router.get("", summary="Public rooms and the private rooms the user belongs to")
async def list_rooms(session: SessionDep, user: CurrentUser) -> list[RoomPublic]:
    return [RoomPublic.model_validate(room) for room in await rooms.list_visible_rooms(session, user=user)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a room owned by the user",
    responses={status.HTTP_409_CONFLICT: _error("The name is taken")},
)
async def create_room(room_create: RoomCreate, session: SessionDep, user: CurrentUser) -> RoomPublic:
    try:
        room = await rooms.create_room(
            session,
            name=room_create.name,
            title=room_create.title,
            is_private=room_create.is_private,
            owner=user,
        )
    except AlreadyExistsError as error:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(error)) from error
    return RoomPublic.model_validate(room)


@router.get("/{room}", summary="One room", responses=ROOM_NOT_FOUND)
async def read_room(room: VisibleRoom) -> RoomPublic:
    return RoomPublic.model_validate(room)


@router.post(
    "/{room}/members",
    status_code=status.HTTP_201_CREATED,
    summary="Add a user to a room (for private rooms, only the owner may)",
    responses={
        **ROOM_OR_USER_NOT_FOUND,
        status.HTTP_403_FORBIDDEN: _error("The room is private and the user is not its owner"),
        status.HTTP_409_CONFLICT: _error("The user is a member already"),
    },
)
async def add_member(
    room: VisibleRoom, membership_create: MembershipCreate, session: SessionDep, user: CurrentUser
) -> MembershipPublic:
    if room.is_private and room.owner_id != user.id:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"Only the owner of the private room {room.name!r} can add members",
        )
    member = await users.get_user_by_username(session, username=membership_create.username)
    if member is None:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"No user is named {membership_create.username!r}",
        )
    try:
        membership = await rooms.add_member(session, room=room, user=member)
    except AlreadyExistsError as error:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(error)) from error
    return MembershipPublic.model_validate(membership)


@router.get(
    "/{room}/messages", summary="A page of the room's history, oldest first", responses=ROOM_NOT_FOUND
)
async def list_messages(
    room: VisibleRoom,
    session: SessionDep,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_SEQ,
            description="Only messages with a larger seq; the page starts right after it.",
        ),
    ] = None,
    before: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_SEQ,
            description="Only messages with a smaller seq; the page ends right before it.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="At most this many messages.")] = 50,
) -> list[MessagePublic]:
    page = await messages.list_messages(session, room=room, after=after, before=before, limit=limit)
    return [MessagePublic.model_validate(message) for message in page]
