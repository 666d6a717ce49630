"""The chat consumer of `/ws/rooms/{room}`: messages, history replay, presence and typing in one room.

The client sends `chat.message` {text}, stored and then sent with its id to everyone in the room, the sender
included, and `chat.typing`, relayed to the others and not stored. The server also sends `presence.state`
(who is here, on arrival), `presence.join` and `presence.leave` (a user's first connection came, their last
one went), across every instance. The users of an instance that dies leave once their presence expires, a
TTL after its last heartbeat: `announce_presence_change` tells the rooms, from the instance that noticed.

The connection is closed with 1008 and a reason when the token is missing or bad, when the room does not
exist or is private and the user is not a member, and when `since` is not a message id. A `chat.message`
that cannot be stored (the database is down) is answered with an `error` of code `unavailable` instead of
its echo, and is neither stored nor sent: the client may send it again. One stored but not sent on (the
broker is down) is accepted all the same: its sender's connection gets the echo at once, and the instance
holds the message and publishes it as soon as the broker is back (see `unsent`), so that the clients that
stayed connected hear it then, the sender's other tabs included; the sender's connection skips that copy.
Pub/sub keeps nothing: the clients of an instance not yet subscribed again then find it in the history.
Typing notices are dropped while the broker is down: they would be stale.

With `?since=<id>`, the stored messages after that id come first, then the live ones, with no gap and no
duplicate: the connection joins the room before it reads the history, which it does in its writer task, so
the live messages wait behind the replay; an event filter then skips those it sent or was to read, without
encoding anything again. It remembers the ids it replayed rather than the largest one, because on PostgreSQL
a message can commit after another with a larger id and arrive live after the replay. Without `since` there
is nothing to filter, and the connection has no filter (the fan-out queues the frame itself) until it echoes
a message held for the broker, whose live copy the filter then skips.

Every frame to the room is encoded once for all its connections: typing and presence events leave out the
user's own connections with `exclude` (connections are identified by their user's name).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.websockets import WebSocket

from ..db import messages, rooms
from ..db.errors import DATABASE_UNAVAILABLE
from ..db.models import MAX_MESSAGE_ID, Room
from ..realtime import (
    BrokerError,
    Connection,
    PresenceChange,
    WebSocketException,
    WebSocketManager,
    event_filter,
    handler,
    reject,
)
from ..schemas import NO_NUL_PATTERN, MessagePublic
from ..settings import Settings
from .base import SessionEnded, UserConsumer
from .unsent import UnsentMessages

logger = logging.getLogger(__name__)

MAX_ID_DIGITS = len(str(MAX_MESSAGE_ID))  # a longer `since` is refused before it is parsed

ROOM_GROUP_PREFIX = "room:"
REPLAY_PAGE_SIZE = 100
WS_1011_INTERNAL_ERROR = 1011


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
    """A stored message: sent to everyone in the room, its sender included, and replayed after `since`."""

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


class RoomConsumer(UserConsumer):
    """One connection to a chat room."""

    sends = (ChatMessagePublic, ChatTypingPublic, PresenceState, PresenceJoin, PresenceLeave, SessionEnded)
    room: Room

    def __init__(
        self,
        websocket: WebSocket,
        manager: WebSocketManager,
        *,
        room: str,
        settings: Settings,
        session_factory: async_sessionmaker[AsyncSession],
        unsent: UnsentMessages,
    ) -> None:
        super().__init__(websocket, manager, settings=settings, session_factory=session_factory)
        self.room_name = room
        self.group = room_group(room)
        self.unsent = unsent
        self.since: int | None = None
        self.replay_after: int | None = None  # until the replay has run, the id it reads the messages after
        self.replayed: set[int] = set()  # the ids sent by this connection itself: replayed, or echoed at once

    async def connect(self) -> None:
        self.user = await self.authenticate()
        if "\x00" in self.room_name:
            await reject(self.websocket, "No such room, or it is private and you are not a member")
        async with self.session_factory() as session:
            room = await rooms.get_visible_room(session, name=self.room_name, user=self.user)
        if room is None:
            await reject(self.websocket, "No such room, or it is private and you are not a member")
        self.room = room
        since = self.websocket.query_params.get("since")
        valid_since = since is None or (
            since.isdecimal() and len(since) <= MAX_ID_DIGITS and int(since) <= MAX_MESSAGE_ID
        )
        if not valid_since:
            await reject(self.websocket, "since must be the id of a message, a non-negative integer")
        connection = await self.accept()
        if since is not None:
            self.since = self.replay_after = int(since)
        else:
            connection.event_filter = None  # nothing is replayed: live messages go out as they are
        await self.group_add(self.group)  # before the history is read, so that nothing said can be missed
        if self.since is not None:
            self.queue_call(self._replay)  # the live messages wait behind it
        await self._announce_arrival(connection)

    async def disconnect(self, code: int) -> None:
        # Not to the user's own connections: one still here would be a tab that opened as this one closed.
        if self.connection is not None and await self.manager.presence_leave(self.group, self.connection):
            await self.group_send(
                self.group, PresenceLeave(user=self.user.username), exclude=self.user.username
            )

    @handler(sends=[ChatMessagePublic])
    async def on_chat_message(self, message: ChatMessageCreate) -> None:
        """Store the message, then send it to everyone in the room, the sender included."""
        try:
            async with self.session_factory() as session:
                stored = await messages.create_message(
                    session, room=self.room, user=self.user, text=message.text
                )
        except DATABASE_UNAVAILABLE as error:
            logger.warning("could not store a message in room %r: %r", self.room.name, error)
            raise WebSocketException(
                "the message could not be stored; send it again later", code="unavailable"
            ) from None
        public = ChatMessagePublic.model_validate(stored)
        try:
            await self.group_send(self.group, public)
        except BrokerError as error:
            logger.warning("message %s held until the broker is back: %s", stored.id, error)
            self.unsent.hold(self.group, stored.id, public)
            self._echo_at_once(public)

    @handler(sends=[ChatTypingPublic])
    async def on_chat_typing(self, message: ChatTyping) -> None:
        """Tell the others in the room that the user is typing; nothing is stored, nor sent later."""
        typing = ChatTypingPublic(user=self.user.username, room=self.room.name)
        with contextlib.suppress(BrokerError):
            await self.group_send(self.group, typing, exclude=self.user.username)

    @event_filter("chat.message")
    def not_replayed(self, event: Mapping[str, Any], frame: str) -> bool:
        """Whether the client gets a live message: not if the replay sent it or will read it, nor if this
        connection echoed it at once, while it was held (`_echo_at_once`)."""
        message_id = event.get("id")
        if self.replay_after is not None:
            return not (isinstance(message_id, int) and message_id > self.replay_after)
        return message_id not in self.replayed

    def _echo_at_once(self, message: ChatMessagePublic) -> None:
        """Send a held message to its sender now, and have `not_replayed` skip it once it is published."""
        # The filter is off on a connection without `since`: on again, for this live copy.
        self._connected().event_filter = self._event_filter
        self.queue_call(functools.partial(self._echo, message))  # behind the replay, which may have read it

    async def _echo(self, message: ChatMessagePublic) -> None:
        if message.id not in self.replayed:
            self.replayed.add(message.id)
            await self.send_json(message)

    async def _announce_arrival(self, connection: Connection) -> None:
        """Count the user present, tell the room if they just came, and tell them who is here."""
        if await self.manager.presence_join(self.group, connection, self.user.username):
            await self.group_send(
                self.group, PresenceJoin(user=self.user.username), exclude=self.user.username
            )
        users = await self.manager.presence_members(self.group)
        await self.send_json(PresenceState(users=sorted(users)))

    async def _replay(self) -> None:
        """Send the stored messages after `since`; the live ones queued behind it then pass `not_replayed`."""
        after = self.since
        try:
            while True:
                async with self.session_factory() as session:
                    page = await messages.list_messages(
                        session, room=self.room, after=after, limit=REPLAY_PAGE_SIZE
                    )
                for stored in page:
                    await self.send_json(ChatMessagePublic.model_validate(stored))
                    self.replayed.add(stored.id)
                if len(page) < REPLAY_PAGE_SIZE:
                    break
                after = page[-1].id
        except Exception:
            # A partial replay would leave a gap; closed, the client reconnects and asks again.
            logger.exception("could not replay room %r after message %s", self.room.name, self.since)
            await self.close(WS_1011_INTERNAL_ERROR, "Could not read the history")
            return
        self.replay_after = None


async def announce_presence_change(manager: WebSocketManager, change: PresenceChange) -> None:
    """Tell a room of the users who came or went without a connection of theirs saying so: those of an
    instance that died (or stalled, and came back). The manager's `on_presence_change`."""
    if not change.group.startswith(ROOM_GROUP_PREFIX):
        return
    for user in sorted(change.left):
        await manager.group_send(change.group, PresenceLeave(user=user), exclude=user)
    for user in sorted(change.joined):
        await manager.group_send(change.group, PresenceJoin(user=user), exclude=user)
