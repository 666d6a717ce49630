"""The connections of this process, and the broker that joins them to every other instance's.

Every send goes through the broker, even to a connection of this instance, so all instances behave alike.
One listener task takes messages off the broker and hands each frame, encoded once by the sender, to every
local connection it is for: written at once where the connection is idle, else queued for its writer task
(see `outbox`). The listener never waits for a socket, and no task is created or woken per message. A
group event can leave out some connections (`exclude`) and consumers can filter the events they receive,
both without encoding the frame again. While the broker cannot be reached, sends and presence raise
`BrokerUnavailable`: what was not published is not sent.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from starlette import status
from starlette.websockets import WebSocket

from .brokers import BrokerInterface, BrokerState, create_broker
from .brokers.adapter import MinimalBrokerAdapter, adapt_broker
from .calls import start
from .connection import Connection
from .dispatch import Dispatcher
from .exceptions import BrokerError, InvalidMessage, RealtimeError, error_frame
from .message import Envelope, Frame, Message, encode_frame, frame_type
from .outbox import Rounds
from .presence import Presence, PresenceChange
from .recovery import Recovery, RecoveryOptions
from .stats import Stats
from .topics import handle_subscription_message, validate_topic

__all__ = ["WebSocketManager"]

logger = logging.getLogger(__name__)


class WebSocketManager:
    """Connections, groups, topics and presence of one instance; `broker_channel` prefixes every channel.

    `broker` replaces the broker of `broker_url`: a `BrokerInterface`, or an object (or a class, which is
    instantiated) with only the seed library's six broker methods, run through `MinimalBrokerAdapter`.

    `on_presence_change(manager, change)` is told of the presence changes that no `presence_join` or
    `presence_leave` reported, such as the members of an instance that died (see `presence`).

    For the clients that ask for batches (`?batch=1`), `batch_max_bytes` bounds a frame of several events,
    and `batch_interval` is the least time from the end of a round of batch writes to the next: the events
    that come meanwhile go out together (see `outbox.Rounds`).
    """

    def __init__(
        self,
        broker_channel: str,
        broker_url: str = "memory://",
        *,
        broker: BrokerInterface | object | None = None,
        queue_size: int = 256,
        max_frame_bytes: int = 64 * 1024,
        close_timeout: float = 5.0,
        batch_max_bytes: int = 64 * 1024,
        batch_interval: float = 0.0,
        presence_ttl: float = 30.0,
        on_presence_change: Callable[[WebSocketManager, PresenceChange], Awaitable[None]] | None = None,
        recovery: RecoveryOptions | None = None,
        **broker_options: Any,
    ) -> None:
        self.broker_channel = broker_channel
        self.broker = (
            adapt_broker(broker, broker_channel)
            if broker is not None
            else create_broker(broker_url, **broker_options)
        )
        self._needs_shared_presence = on_presence_change is not None
        self.queue_size = queue_size
        self.max_frame_bytes = max_frame_bytes
        self.close_timeout = close_timeout
        self.rounds = Rounds(max_bytes=batch_max_bytes, interval=batch_interval)
        self.stats = Stats()
        # Recoverable groups (see `recovery`): their members' cursors, healed after broker reconnects.
        self.recovery = Recovery(self.broker, recovery)
        self._dispatcher = Dispatcher(self.broker, broker_channel, self.stats, self.recovery.streams)
        on_change = functools.partial(on_presence_change, self) if on_presence_change is not None else None
        self._presence = Presence(self.broker, broker_channel, presence_ttl, on_change)
        self._instance = secrets.token_hex(6)
        self._topic_messages = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    async def __aenter__(self) -> Self:
        await self.startup()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._dispatcher.connections))

    def __len__(self) -> int:
        return len(self._dispatcher.connections)

    @property
    def active_connections(self) -> list[Connection]:
        return list(self._dispatcher.connections)

    @property
    def listening(self) -> bool:
        """Started, and the tasks taking messages off the broker and beating presence are running."""
        return self._started and bool(self._tasks) and not any(task.done() for task in self._tasks)

    @property
    def ready(self) -> bool:
        """Listening, and the broker's subscriptions are live (what `/readyz` wants to know)."""
        return self.listening and self.broker.state is BrokerState.CONNECTED

    async def startup(self) -> None:
        if self._started:
            return
        if self._needs_shared_presence and isinstance(self.broker, MinimalBrokerAdapter):
            raise RuntimeError(
                f"{type(self.broker.broker).__name__} has only the seed library's six broker methods, so "
                "presence is kept per instance; on_presence_change needs a BrokerInterface with presence"
            )
        self._started = True
        await self.broker.connect()
        self._tasks = [
            asyncio.create_task(self._dispatcher.listen(), name="websocket-manager-listener"),
            asyncio.create_task(self._presence.beat_forever(), name="websocket-manager-presence"),
        ]
        await self._dispatcher.channels.acquire(self._dispatcher.channel("broadcast"))

    async def shutdown(self) -> None:
        """Close every connection with 1012 (service restart), stop every task, disconnect the broker."""
        if not self._started:
            return
        self._started = False
        connections = list(self._dispatcher.connections)
        await asyncio.gather(
            *(connection.close(status.WS_1012_SERVICE_RESTART) for connection in connections)
        )
        for connection in connections:
            await self.remove_connection(connection)
        try:
            await self._dispatcher.channels.release(self._dispatcher.channel("broadcast"))
        except BrokerError:
            logger.warning("could not unsubscribe from broadcasts while shutting down")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._presence.aclose()
        await self.broker.disconnect()

    def create_connection(
        self, websocket: WebSocket, conn_id: str | None = None, topic: str | None = None
    ) -> Connection:
        """A connection with this manager's limits, not yet accepted nor added."""
        return Connection(
            websocket,
            conn_id if conn_id is not None else secrets.token_hex(16),
            topic,
            queue_size=self.queue_size,
            max_frame_bytes=self.max_frame_bytes,
            close_timeout=self.close_timeout,
            rounds=self.rounds,
            stats=self.stats,
        )

    async def add_connection(self, connection: Connection) -> None:
        """Start routing frames to an accepted connection."""
        if not self._started:
            raise RuntimeError("the manager is not started; call startup() first")
        await self._dispatcher.add(connection)

    async def new_connection(
        self,
        websocket: WebSocket,
        conn_id: str | None = None,
        topic: str | None = None,
        *,
        subprotocol: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> Connection:
        """Accept `websocket` and add it; `conn_id` defaults to a random id."""
        connection = self.create_connection(websocket, conn_id, topic)
        await connection.accept(subprotocol, headers)
        await self.add_connection(connection)
        return connection

    def remove_connection(self, connection: Connection) -> Awaitable[None]:
        """Forget a connection whose client left: groups, topics, presence, and its writer task.

        Takes effect whether awaited or not, as the seed library documents it (see `calls`)."""
        return start(self._remove_connection(connection))

    async def _remove_connection(self, connection: Connection) -> None:
        await connection.settled()
        try:
            await self._presence.leave_all(connection)
        except Exception:
            logger.exception("could not remove the presence entries of %r", connection)
        await self._dispatcher.remove(connection)
        await connection.abort()

    async def close_connection(
        self, connection: Connection, code: int = status.WS_1000_NORMAL_CLOSURE
    ) -> None:
        await connection.close(code)
        await self.remove_connection(connection)

    def set_conn_id(self, connection: Connection, conn_id: str) -> Awaitable[None]:
        """Give `connection` a new id, and tell its client: `{"type": "set_conn_id", "conn_id": ...}`."""
        return start(self._set_conn_id(connection, conn_id))

    async def _set_conn_id(self, connection: Connection, conn_id: str) -> None:
        await connection.set_id(conn_id)
        await connection.send_json({"type": "set_conn_id", "conn_id": conn_id})

    def broadcast(self, message: Message | Frame) -> Awaitable[None]:
        """Send to every connection of every instance; takes effect whether awaited or not."""
        return start(self._publish("broadcast", [""], message))

    def send(self, topic: str | Message, message: Message | Frame | None = None) -> Awaitable[None]:
        """Send to the connections, on every instance, with a filter matching the topic.

        `send(message)` takes the topic from `message.topic`; `send(topic, message)` (the seed library's
        form) sends any frame. Takes effect whether awaited or not; a missing or invalid topic raises at
        once (`InvalidMessage`, `InvalidTopic`)."""
        frame: Message | Frame
        if isinstance(topic, Message):
            name, frame = topic.topic, topic
        elif message is None:
            raise TypeError("send(topic, message) needs a message")
        else:
            name, frame = topic, message
        if name is None:
            raise InvalidMessage("a topic message needs a 'topic'")
        validate_topic(name)
        message_id = f"{self._instance}:{next(self._topic_messages)}"
        return start(self._publish("topic", [name], frame, message_id))

    def send_by_conn_id(
        self, conn_id: str | Sequence[str] | Message, message: Message | Frame | None = None
    ) -> Awaitable[None]:
        """Send to every connection, on every instance, whose id is the given one (or one of them).

        `send_by_conn_id(message)` takes the ids from `message.conn_id`; `send_by_conn_id(conn_id, message)`
        is the seed library's form. Takes effect whether awaited or not."""
        frame: Message | Frame
        if isinstance(conn_id, Message):
            ids, frame = conn_id.conn_id, conn_id
        elif message is None:
            raise TypeError("send_by_conn_id(conn_id, message) needs a message")
        else:
            ids, frame = conn_id, message
        if not ids:
            raise InvalidMessage("a 'send_by_conn_id' message needs a 'conn_id'")
        targets = [ids] if isinstance(ids, str) else list(dict.fromkeys(ids))
        return start(self._publish("conn", targets, frame))

    def send_msg(self, message: Message | Frame) -> Awaitable[None]:
        """Route by type: `broadcast`, `send_by_conn_id`, else by topic, else by conn_id.

        A dict is read as a client message first. Takes effect whether awaited or not."""
        if not isinstance(message, Message):
            message = Message.from_client_message(
                data=dict(message) if isinstance(message, Mapping) else message
            )
        if message.type == "broadcast":
            return self.broadcast(message)
        if message.type == "send_by_conn_id" or (message.topic is None and message.conn_id):
            return self.send_by_conn_id(message)
        if message.topic is not None:
            return self.send(message)
        raise InvalidMessage(f"a {message.type!r} message needs a 'topic' or a 'conn_id'")

    async def receive(self, connection: Connection, message: Message | Any) -> None:
        """Handle a client message of the library protocol; a bad one is answered with an error frame."""
        try:
            if not isinstance(message, Message):
                message = Message.from_client_message(data=message)
            if message.type in ("subscribe", "unsubscribe"):
                await handle_subscription_message(connection, message)
                await connection.send_json({"type": f"{message.type}d", "topic": message.topic})
            else:
                await self.send_msg(message)
        except RealtimeError as error:
            await connection.send_json(error.frame())
        except BrokerError:
            logger.warning("could not handle a message of %r: the broker is unavailable", connection)
            await connection.send_json(error_frame("unavailable", "messages cannot be sent now; try again"))

    async def group_add(self, group: str, connection: Connection) -> None:
        """Add a connection to a group; returns once the group's traffic reaches this instance."""
        if connection not in self._dispatcher.connections:
            raise ValueError(f"{connection!r} is not a connection of this manager")
        await connection.join(group)

    async def group_discard(self, group: str, connection: Connection) -> None:
        """Remove a connection from a group; nothing happens if it was not in it."""
        await connection.leave(group)

    async def group_send(self, group: str, event: Frame, *, exclude: str | Iterable[str] = ()) -> None:
        """Send an event with a string `type` to every member of `group` on every instance.

        Members whose connection id is `exclude` (or one of them) do not get it: pass the sender's id to
        skip every connection that shares it. The frame is encoded once for every member; a consumer with
        an `event_filter` for the type decides per connection, one with an event method re-encodes.
        """
        if frame_type(event) is None:
            raise InvalidMessage("a group event needs a string 'type'")
        excluded = frozenset([exclude] if isinstance(exclude, str) else exclude)
        await self._publish("group", [group], event, exclude=excluded)

    def group_members(self, group: str) -> frozenset[Connection]:
        """The local members of `group`."""
        return self._dispatcher.members(group)

    def connections_by_id(self, conn_id: str) -> frozenset[Connection]:
        """The local connections whose id is `conn_id`."""
        return self._dispatcher.by_id(conn_id)

    async def presence_join(self, group: str, connection: Connection, member: str) -> bool:
        """Mark `member` present in `group` through `connection`; True if it was absent everywhere.

        Atomic across instances: of two first connections of a member at once, exactly one gets True."""
        arrived, _ = await self._presence.join(group, connection, member)
        return arrived

    async def presence_join_and_count(self, group: str, connection: Connection, member: str) -> int:
        """Mark `member` present in `group` through `connection`, and count the members present then, on
        every instance: in the same step as the join where the broker says, else by reading them."""
        _, present = await self._presence.join(group, connection, member)
        return present if present is not None else len(await self._presence.members(group))

    async def presence_leave(self, group: str, connection: Connection) -> bool:
        """Remove `connection`'s presence in `group`; True if its member is now absent everywhere (atomic)."""
        return await self._presence.leave(group, connection)

    async def presence_members(self, group: str) -> set[str]:
        """Members present in `group` on any live instance."""
        return await self._presence.members(group)

    async def _publish(
        self,
        kind: str,
        targets: list[str],
        frame: Message | Frame,
        message_id: str | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> None:
        text = encode_frame(frame)
        self.stats.frames_encoded += 1
        event = frame_type(frame)
        for target in targets:
            envelope = Envelope(kind, target, text, event=event, id=message_id, exclude=exclude)
            await self.broker.publish(self._dispatcher.channel(kind, target), envelope.encode())
