"""The chat consumer of `/ws/rooms/{room}`: messages, presence and typing in one room.

What a client sends and receives is in the README ("WebSocket endpoints") and the AsyncAPI document. The
engine keeps the guarantees: a room is a recoverable group (`realtime.recovery`), so each connection gets
every stored message once and in seq order, and presence is gathered per tick (`realtime.PresenceTicks`).
This file says who may join a room, has each message stored with the room's next `seq` (`db.message_log`,
which stores what a room's clients send meanwhile in one transaction), and shapes the frames.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.websockets import WebSocket

from ..db import messages
from ..db.errors import DATABASE_UNAVAILABLE
from ..db.message_log import MessageLog
from ..db.models import MAX_SEQ, Message
from ..db.refs import RoomRecord, RoomRef
from ..db.rooms import RoomReads
from ..realtime import (
    BrokerError,
    Frame,
    HistoryTruncated,
    PresenceTicks,
    RealtimeError,
    WebSocketManager,
    handler,
    reject,
)
from ..schemas import NO_NUL_PATTERN, MessagePublic
from ..settings import Settings
from .base import SessionEnded, UserConsumer
from .faults import crash_point

logger = logging.getLogger(__name__)

MAX_SEQ_DIGITS = len(str(MAX_SEQ))  # a longer `since` is refused before it is parsed

ROOM_GROUP_PREFIX = "room:"


def room_group(room: str) -> str:
    """The group of the connections to a room, on every instance."""
    return ROOM_GROUP_PREFIX + room


class ChatMessageCreate(BaseModel):
    """Say something in the room."""

    type: Literal["chat.message"]
    text: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000, pattern=NO_NUL_PATTERN)
    ] = Field(examples=["Hello, world"])


class ChatMessagePublic(MessagePublic):
    """A stored message: sent to everyone in the room, its sender included, once each, in seq order."""

    type: Literal["chat.message"] = "chat.message"


class ChatTyping(BaseModel):
    """The user is typing; send it every few seconds while they are."""

    type: Literal["chat.typing"]


class ChatTypingPublic(BaseModel):
    """Someone else in the room is typing."""

    type: Literal["chat.typing"] = "chat.typing"
    user: str = Field(examples=["alice"])
    room: str = Field(examples=["lobby"])


class PresenceState(BaseModel):
    """Everyone in the room now, on any instance: sent on arrival."""

    type: Literal["presence.state"] = "presence.state"
    users: list[str] = Field(examples=[["alice", "bob"]])


class PresenceJoin(BaseModel):
    """Another user came into the room (their first connection to it)."""

    type: Literal["presence.join"] = "presence.join"
    user: str = Field(examples=["bob"])


class PresenceLeave(BaseModel):
    """A user left the room (their last connection to it closed)."""

    type: Literal["presence.leave"] = "presence.leave"
    user: str = Field(examples=["bob"])


class PresenceDiff(BaseModel):
    """Users who came into (`joins`) or left (`leaves`) the room during one presence tick that had more than
    one change. It also reaches the connections of the users it names: a client ignores its own user in
    `leaves`, since it is still here."""

    type: Literal["presence.diff"] = "presence.diff"
    joins: list[str] = Field(examples=[["bob", "carol"]])
    leaves: list[str] = Field(examples=[["dave"]])


async def send_presence(manager: WebSocketManager, group: str, changes: Mapping[str, bool]) -> None:
    """A tick's presence changes in a room: one alone is a `presence.join` or `presence.leave`, to everyone
    but that user; more are one `presence.diff`, to the whole room."""
    if len(changes) == 1:
        [(user, present)] = changes.items()
        single = PresenceJoin(user=user) if present else PresenceLeave(user=user)
        await manager.group_send(group, single, exclude=user)
        return
    joins = sorted(user for user, present in changes.items() if present)
    leaves = sorted(user for user, present in changes.items() if not present)
    await manager.group_send(group, PresenceDiff(joins=joins, leaves=leaves))


def room_presence(tick: float) -> PresenceTicks:
    """The rooms' presence announcements, gathered per room for `tick` (`WS_PRESENCE_TICK_SECONDS`)."""
    return PresenceTicks(tick, send_presence, prefix=ROOM_GROUP_PREFIX)


class RoomHistory:
    """Where a room's messages are read from when a connection missed some: the database."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], room: RoomRef) -> None:
        self.session_factory = session_factory
        self.room = room

    async def head(self, group: str) -> int:
        async with self.session_factory() as session:
            return await messages.last_seq(session, room=self.room)

    async def read(self, group: str, *, after: int, limit: int) -> Sequence[Frame]:
        async with self.session_factory() as session:
            page = await messages.list_messages(session, room=self.room, after=after, limit=limit)
        return [ChatMessagePublic.model_validate(message) for message in page]

    async def seq_after_id(self, message_id: int) -> int:
        async with self.session_factory() as session:
            return await messages.seq_after_id(session, room=self.room, message_id=message_id)


class RoomConsumer(UserConsumer):
    """One connection to a chat room."""

    sends = (
        ChatMessagePublic,
        HistoryTruncated,
        ChatTypingPublic,
        PresenceState,
        PresenceJoin,
        PresenceLeave,
        PresenceDiff,
        SessionEnded,
    )
    room: RoomRecord

    def __init__(
        self,
        websocket: WebSocket,
        manager: WebSocketManager,
        *,
        room: str,
        settings: Settings,
        session_factory: async_sessionmaker[AsyncSession],
        presence: PresenceTicks,
        rooms: RoomReads,
        log: MessageLog,
    ) -> None:
        super().__init__(websocket, manager, settings=settings, session_factory=session_factory)
        self.presence = presence
        self.rooms = rooms
        self.log = log
        self.room_name = room
        self.group = room_group(room)

    async def connect(self) -> None:
        self.user = await self.authenticate()
        if "\x00" in self.room_name:
            await reject(self.websocket, "No such room, or it is private and you are not a member")
        room = await self.rooms.visible_room(name=self.room_name, user=self.user)
        if room is None:
            await reject(self.websocket, "No such room, or it is private and you are not a member")
        self.room = RoomRecord.of(room)
        since, since_id = (self.websocket.query_params.get(name) for name in ("since", "since_id"))
        for value in (since, since_id):
            if value is not None and not (
                value.isdecimal() and len(value) <= MAX_SEQ_DIGITS and int(value) <= MAX_SEQ
            ):
                await reject(self.websocket, "since and since_id must be non-negative integers")
        history = RoomHistory(self.session_factory, self.room)
        resume = int(since) if since is not None else None
        if since_id is not None and resume is None:
            resume = await history.seq_after_id(int(since_id))
        connection = await self.accept()
        await self.join_recoverable(self.group, history, event_type="chat.message", since=resume)
        if await self.manager.presence_join(self.group, connection, self.user.username):
            self.presence.announce(self.manager, self.group, self.user.username, present=True)
        users = await self.manager.presence_members(self.group)
        await self.send_json(PresenceState(users=sorted(users)))

    async def disconnect(self, code: int) -> None:
        # Not to the user's own connections: one still here would be a tab that opened as this one closed.
        if self.connection is not None and await self.manager.presence_leave(self.group, self.connection):
            self.presence.announce(self.manager, self.group, self.user.username, present=False)

    @handler(sends=[ChatMessagePublic])
    async def on_chat_message(self, message: ChatMessageCreate) -> None:
        """Store the message, then send it to everyone in the room, the sender included."""
        # The room's log stores it with what the room's clients post meanwhile, in one transaction, and
        # then calls `_send_stored`; the connection's next frame is read in the meantime.
        await self.log.post(
            self.room, self.user, message.text, stored=self._send_stored, failed=self._not_stored
        )

    async def _send_stored(self, stored: Message) -> None:
        crash_point("after-commit", stored.text)
        public = ChatMessagePublic.model_validate(
            {
                "id": stored.id,
                "seq": stored.seq,
                "room": {"name": self.room.name},
                "user": {"username": self.user.username},
                "text": stored.text,
                "created_at": stored.created_at,
            }
        )
        try:
            await self.group_send(self.group, public)
        except BrokerError as error:
            await self.report(error)

    async def _not_stored(self, error: Exception) -> None:
        if isinstance(error, DATABASE_UNAVAILABLE):
            logger.warning("could not store a message in room %r: %r", self.room.name, error)
            error = RealtimeError("the message could not be stored; send it again later", code="unavailable")
        await self.report(error)

    @handler(sends=[ChatTypingPublic])
    async def on_chat_typing(self, message: ChatTyping) -> None:
        """Tell the others in the room that the user is typing; nothing is stored, nor sent later."""
        typing = ChatTypingPublic(user=self.user.username, room=self.room.name)
        with contextlib.suppress(BrokerError):
            await self.group_send(self.group, typing, exclude=self.user.username)
