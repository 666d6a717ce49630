"""One WebSocket: its id, topic filters and groups, what it receives, and its outbox.

Everything sent to a connection goes through its `Outbox` (a bounded queue and one writer task). Changes
to its id, topics and groups are reported to the manager that holds it, which indexes them. `topics` is a
live set of the connection's MQTT filters: adding to it subscribes, removing unsubscribes, as in the seed
library. A connection made around a WebSocket that the app already accepted starts its outbox at the first
send; one that was never accepted raises on send rather than drop the frame.

A client asks for batches with `?batch=1` on the handshake: its connection then gets several events in one
text frame when several are waiting for it, one JSON object a line (see `outbox`). Any other value than 0 or
1 is refused with 1008 when the engine accepts the connection; a connection around a WebSocket that the app
accepted itself batches only for `1`.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, MutableSet
from typing import Any, Protocol

from starlette import status
from starlette.exceptions import WebSocketException
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .calls import Call, done, start
from .exceptions import InvalidMessage
from .message import Frame, Message, encode_frame, loads
from .outbox import EventFilter, EventHandler, Filtered, Outbox, Rounds
from .stats import Stats
from .topics import validate_filter

__all__ = [
    "BATCH_PARAMETER",
    "Connection",
    "ConnectionHub",
    "ConnectionState",
    "EventFilter",
    "EventHandler",
    "TopicSet",
    "batch_requested",
]

BATCH_PARAMETER = "batch"
"""The query parameter of the handshake by which a client asks for batched frames: `?batch=1`."""


def batch_requested(websocket: WebSocket) -> bool:
    """Whether the client asked for batched frames; raises `ValueError` for a value other than 0 or 1."""
    value = websocket.query_params.get(BATCH_PARAMETER)
    if value is None or value == "0":
        return False
    if value == "1":
        return True
    raise ValueError(f"{BATCH_PARAMETER} must be 0 or 1")


class ConnectionState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class ConnectionHub(Protocol):
    """What a manager does when a connection it holds changes; see `WebSocketManager`."""

    stats: Stats

    async def topic_added(self, connection: Connection, topic_filter: str) -> None: ...
    async def topic_removed(self, connection: Connection, topic_filter: str) -> None: ...
    async def group_added(self, connection: Connection, group: str) -> None: ...
    async def group_removed(self, connection: Connection, group: str) -> None: ...
    async def id_changed(self, connection: Connection, previous: str) -> None: ...


class TopicSet(MutableSet[str]):
    """The topic filters of a connection, as a set: `add` subscribes it, `discard` unsubscribes it.

    Both take effect at once for this connection's own sends and are indexed by its manager in the
    background; an invalid filter raises `InvalidSubscription`. Iterating gives a snapshot.
    """

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def __contains__(self, topic_filter: object) -> bool:
        return topic_filter in self._connection._topics

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._connection._topics))

    def __len__(self) -> int:
        return len(self._connection._topics)

    def __repr__(self) -> str:
        return f"TopicSet({sorted(self._connection._topics)!r})"

    def add(self, value: str) -> None:
        self._connection.subscribe(value)

    def discard(self, value: str) -> None:
        self._connection.unsubscribe(value)


class Connection:
    """A WebSocket with an id (which several connections may share, say those of one user)."""

    def __init__(
        self,
        websocket: WebSocket,
        conn_id: str,
        topic: str | None = None,
        *,
        queue_size: int = 256,
        max_frame_bytes: int = 64 * 1024,
        close_timeout: float = 5.0,
        rounds: Rounds | None = None,
        stats: Stats | None = None,
    ) -> None:
        if topic is not None:
            validate_filter(topic, self)
        self.websocket = websocket
        self.uid = secrets.token_hex(16)
        self.queue_size = queue_size
        self.max_frame_bytes = max_frame_bytes
        self.close_timeout = close_timeout
        self.rounds = rounds if rounds is not None else Rounds()
        """What writes this connection's frames while its writer waits: its manager's rounds, or its own."""
        self.stats = stats if stats is not None else Stats()
        """Where what happens to its frames is counted: its manager's, or its own."""
        # Set by the connection's consumer: for an event type, the method to pass such events to, or the
        # filter that tells which of them its client gets. See `WebSocketManager.group_send`.
        self.event_handler: Callable[[str], EventHandler | None] | None = None
        self.event_filter: Callable[[str], EventFilter | None] | None = None
        # The class of that consumer, for metrics: `realtime_connections{consumer="RoomConsumer"}`.
        self.consumer_name: str | None = None
        self._id = conn_id
        self._topics: set[str] = {topic} if topic is not None else set()
        self._groups: set[str] = set()
        self._outbox: Outbox | None = None
        self._refused = False
        self._hub: ConnectionHub | None = None
        self._pending: Call[None] | None = None

    def __repr__(self) -> str:
        return f"<Connection id={self._id!r} uid={self.uid[:8]} {self.state.value}>"

    @property
    def id(self) -> str:
        return self._id

    @property
    def topics(self) -> TopicSet:
        return TopicSet(self)

    @topics.setter
    def topics(self, topic_filters: Iterable[str]) -> None:
        wanted = set(topic_filters)
        for topic_filter in wanted:
            validate_filter(topic_filter, self)
        for topic_filter in self._topics - wanted:
            self.unsubscribe(topic_filter)
        for topic_filter in wanted - self._topics:
            self.subscribe(topic_filter)

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(self._groups)

    @property
    def state(self) -> ConnectionState:
        if self._outbox is None:
            return ConnectionState.CLOSED if self._refused else ConnectionState.NEW
        return ConnectionState(self._outbox.state.value)

    @property
    def close_code(self) -> int | None:
        """The code this side closed with (1013 for a client too slow), None if it did not."""
        return self._outbox.close_code if self._outbox is not None else None

    @property
    def pending(self) -> int:
        """Frames waiting to be written."""
        return self._outbox.pending if self._outbox is not None else 0

    @property
    def batching(self) -> bool:
        """Whether the client gets several events in one frame (it asked with `?batch=1`)."""
        return self._outbox is not None and self._outbox.batching

    @property
    def idle(self) -> bool:
        """Open, with nothing queued nor being written: what is delivered now is the next frame written."""
        return self._outbox is not None and self._outbox.idle

    def attach(self, hub: ConnectionHub | None) -> None:
        """Let `hub` (the manager) index this connection's changes and count what happens to its frames;
        None detaches it (what happens to the frames still waiting is counted all the same)."""
        self._hub = hub
        if hub is not None:
            self.stats = hub.stats
            if self._outbox is not None:
                self._outbox.stats = hub.stats

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        try:
            batch = batch_requested(self.websocket)
        except ValueError as error:
            await self.websocket.accept(subprotocol=subprotocol, headers=headers)
            raise WebSocketException(status.WS_1008_POLICY_VIOLATION, str(error)) from None
        await self.websocket.accept(subprotocol=subprotocol, headers=headers)
        self._open_outbox(batch)

    def _open_outbox(self, batch: bool | None = None) -> Outbox:
        """Start writing; `batch` None for a WebSocket the app accepted, whose `?batch` nothing checked."""
        if batch is None:
            try:
                batch = batch_requested(self.websocket)
            except ValueError:
                batch = False
        self._outbox = Outbox(
            self.websocket,
            size=self.queue_size,
            close_timeout=self.close_timeout,
            name=f"{self._id}/{self.uid[:8]}",
            encode=self.encode,
            stats=self.stats,
            rounds=self.rounds,
            batching=batch,
        )
        return self._outbox

    def _sending_outbox(self) -> Outbox:
        """The outbox, started here for a WebSocket the app accepted itself; raises if it was not accepted."""
        if self._outbox is not None:
            return self._outbox
        if self.websocket.application_state is WebSocketState.CONNECTED and not self._refused:
            return self._open_outbox()
        raise RuntimeError(f"{self!r} cannot send: its WebSocket was not accepted; call accept() first")

    async def close(self, code: int = status.WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        """Close once the frames already queued are written; before `accept()`, refuse the handshake."""
        if self._outbox is not None:
            await self._outbox.close(code, reason)
        elif not self._refused:
            self._refused = True
            await self.websocket.close(code, reason)

    async def abort(self) -> None:
        """Stop writing without a close frame: the peer is gone."""
        if self._outbox is not None:
            await self._outbox.abort()

    async def receive_frame(self) -> str | bytes:
        """The next text or binary frame; raises `WebSocketDisconnect`, or `InvalidMessage` if too large."""
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        text: str | None = message.get("text")
        frame: str | bytes = text if text is not None else message.get("bytes") or b""
        if self._too_large(frame):
            raise InvalidMessage(
                f"frames are limited to {self.max_frame_bytes} bytes", connection=self, code="too_large"
            )
        return frame

    async def receive_json(self) -> Any:
        """The next frame decoded; raises `InvalidMessage` for binary or invalid JSON frames."""
        frame = await self.receive_frame()
        if isinstance(frame, bytes):
            raise InvalidMessage("binary frames are not accepted; send JSON as text", connection=self)
        try:
            return loads(frame)
        except ValueError as error:
            raise InvalidMessage(f"not valid JSON: {error}", connection=self, code="invalid_json") from None

    async def iter_json(self) -> AsyncIterator[Any]:
        """Decoded frames until the client leaves; a bad frame gets an error frame, an oversized one 1009."""
        while True:
            try:
                yield await self.receive_json()
            except WebSocketDisconnect:
                return
            except InvalidMessage as error:
                await self.send_json(error.frame())
                if error.code == "too_large":
                    await self.close(status.WS_1009_MESSAGE_TOO_BIG)
                    return

    async def send_json(self, data: Frame | Message) -> None:
        await self.send_text(self.encode(data))

    def encode(self, data: Frame | Message) -> str:
        """`data` encoded for this connection alone, and counted (see `Stats.frames_encoded`)."""
        self.stats.frames_encoded += 1
        return encode_frame(data)

    async def send_text(self, text: str) -> None:
        await self._sending_outbox().send(text)

    async def send_bytes(self, data: bytes) -> None:
        await self._sending_outbox().send(data)

    def deliver(self, frame: str | bytes | Filtered | Callable[[], Awaitable[None]]) -> bool:
        """Queue an encoded frame (or a call to run in the writer task); False when it was not queued."""
        if self._outbox is None and self.websocket.application_state is WebSocketState.CONNECTED:
            self._open_outbox()
        return self._outbox is not None and self._outbox.put(frame)

    def subscribe(self, topic_filter: str) -> Awaitable[None]:
        """Add an MQTT filter; raises `InvalidSubscription` at once when it is not valid.

        The filter applies at once; the returned awaitable completes once the manager has indexed it (and
        the broker confirmed the subscription). It takes effect whether awaited or not (see `calls`)."""
        validate_filter(topic_filter, self)
        if topic_filter in self._topics:
            return done()
        self._topics.add(topic_filter)
        if self._hub is None:
            return done()
        return self._notify(self._hub.topic_added(self, topic_filter))

    def unsubscribe(self, topic_filter: str) -> Awaitable[None]:
        """Remove an MQTT filter (harmless when absent); takes effect whether awaited or not."""
        if topic_filter not in self._topics:
            return done()
        self._topics.discard(topic_filter)
        if self._hub is None:
            return done()
        return self._notify(self._hub.topic_removed(self, topic_filter))

    async def settled(self) -> None:
        """Wait until the manager has indexed every topic change made so far."""
        pending = self._pending
        if pending is not None and not pending.done():
            await asyncio.wait({pending.task})

    def _notify(self, change: Coroutine[Any, Any, None]) -> Call[None]:
        """Run `change` (telling the hub of a topic change) after those before it, whether awaited or not."""
        call = start(self._after_pending(self._pending, change))
        self._pending = None if call.done() else call
        return call

    @staticmethod
    async def _after_pending(previous: Call[None] | None, change: Coroutine[Any, Any, None]) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait({previous.task})
        await change

    async def join(self, group: str) -> None:
        if group not in self._groups:
            self._groups.add(group)
            if self._hub is not None:
                await self._hub.group_added(self, group)

    async def leave(self, group: str) -> None:
        if group in self._groups:
            self._groups.discard(group)
            if self._hub is not None:
                await self._hub.group_removed(self, group)

    async def set_id(self, conn_id: str) -> None:
        previous, self._id = self._id, conn_id
        if previous != conn_id and self._hub is not None:
            await self._hub.id_changed(self, previous)

    def _too_large(self, frame: str | bytes) -> bool:
        limit = self.max_frame_bytes
        if len(frame) > limit:
            return True
        if isinstance(frame, bytes) or len(frame) * 4 <= limit:
            return False
        return len(frame.encode()) > limit
