"""A user or a room as the queries of a WebSocket need it: by id, with its name.

A WebSocket keeps its user and room for as long as it is open, so it keeps them as `UserRecord` and
`RoomRecord`, two fields each, rather than as ORM objects, which bring their instance state, the loaded
row and, for a room, its owner: a few KB a connection. The queries take either (`UserRef`, `RoomRef`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class UserRef(Protocol):
    """A `User`, or a `UserRecord`."""

    @property
    def id(self) -> int: ...
    @property
    def username(self) -> str: ...


class RoomRef(Protocol):
    """A `Room`, or a `RoomRecord`."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    username: str

    @classmethod
    def of(cls, user: UserRef) -> UserRecord:
        return cls(user.id, user.username)


@dataclass(frozen=True, slots=True)
class RoomRecord:
    id: int
    name: str

    @classmethod
    def of(cls, room: RoomRef) -> RoomRecord:
        return cls(room.id, room.name)
