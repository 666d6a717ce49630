"""The realtime engine: WebSocket connections of many instances joined through a broker.

It imports nothing from the rest of the service and could be a library of its own.

The manager (one per process) holds the connections and listens to the broker::

    manager = WebSocketManager("chat-service", broker_url="redis://localhost:6379/0",
                               queue_size=256, max_frame_bytes=64 * 1024)
    await manager.startup()       # in the lifespan; `shutdown()` closes every connection with 1012

Consumers (one instance per connection) hold the application logic. Client frames are JSON objects with a
`type`; each type goes to the typed handler whose pydantic model declares it, after validation::

    class ChatSend(BaseModel):
        type: Literal["chat.message"]
        text: str = Field(min_length=1, max_length=2000)

    class ChatMessage(BaseModel):
        type: Literal["chat.message"] = "chat.message"
        user: str
        text: str

    class LobbyConsumer(JsonConsumer):
        groups = ("lobby",)                        # joined on accept, left on disconnect
        sends = (ChatMessage,)                     # frames pushed outside handlers, for the docs

        async def connect(self) -> None:
            token = await WebSocketOAuth2PasswordBearer(tokenUrl="/auth/token")(self.websocket)
            self.user = check_token(token)         # the app's own check; `await reject(ws)` if bad
            self.conn_id = self.user               # the user's tabs share an id (see `exclude` below)
            self.muted: set[str] = set()
            await self.accept()

        @handler(sends=[ChatMessage])
        async def on_chat_message(self, message: ChatSend) -> None:
            await self.group_send("lobby", ChatMessage(user=self.user, text=message.text))

        @handler
        async def on_chat_typing(self, message: ChatTyping) -> None:
            # Encoded once for the whole group; the connections with this id (the user's) do not get it.
            await self.group_send("lobby", Typing(user=self.user), exclude=self.conn_id)

        @event_filter("chat.message")                # per connection, on the frame already encoded
        def not_muted(self, event: Mapping[str, Any], frame: str) -> bool:
            return event["user"] not in self.muted

    router.add_api_websocket_route("/ws/lobby", LobbyConsumer.as_endpoint(lambda ws: ws.app.state.manager))

or, to use FastAPI dependencies, an ordinary endpoint::

    @router.websocket("/ws/rooms/{room}")
    async def room(websocket: WebSocket, room: str, manager: ManagerDep) -> None:
        await RoomConsumer(websocket, manager, room=room).run()

Errors are answered with `{"type": "error", "code": ..., "detail": ...}` (the codes are `ErrorCode`), and
the connection stays open unless a close is said here:

- the client's doing: `invalid_json`, `invalid_message` (with pydantic's detail), `unknown_type`,
  `invalid_topic`, `forbidden`, `rate_limited` (closed with 1008 past the `RateLimit`'s `close_after`),
  `limit_exceeded` (a cap on what one connection or user may hold, such as subscriptions, is reached),
  and `too_large` (closed with 1009);
- the server's: `internal_error`, when a handler or an event filter or method fails (it is logged and
  counted in `stats.handler_errors`), and `unavailable`, when a handler's send finds the broker unreachable
  (`BrokerUnavailable`) or a dependency of the app is down (raise it with that code): try again later.

Raise `RealtimeError(detail, code="forbidden")` from a handler to answer with that error. A client too
slow to read its queue is closed with 1013.

The pieces, from the bottom:

- `topics`: MQTT filters, `validate_filter`, `topic_matches`, `matches(topic, patterns)`, `TopicIndex`.
- `Message(type, topic=None, conn_id=None, data=None)`: the library's pub/sub protocol (`subscribe`,
  `unsubscribe`, `broadcast`, `send`, `send_by_conn_id`), `from_client_message`, `__serialize__`.
- `create_broker(url)`: `InMemoryBroker` (`memory://`), `RedisBroker` (`redis://`, `rediss://`, `unix://`),
  `RedisClusterBroker` (`redis+cluster://host:port,...`, `rediss+cluster://`: sharded pub/sub);
  while Redis cannot be reached, sending raises `BrokerUnavailable` (a `BrokerError`): nothing was sent.
- `Connection`: one socket, its `id`, `topics` and `groups`, a bounded queue and one writer task; a client
  that connects with `?batch=1` gets the events waiting for it together, one JSON object a line of a frame.
  `ServerSend.declare(scope, send)` in front of the middlewares has the frames written with the server's
  own `send`, past them (they act on the handshake and the close), or with the `WriteNow` a server offers
  under `WRITE_NOW` in the scope's extensions, which writes a frame fanned out as bytes framed once.
- `WebSocketManager`: `broadcast`, `send` (topic), `send_by_conn_id`, `send_msg`, `receive`, `group_add`,
  `group_discard`, `group_send`, `presence_join`, `presence_leave`, `presence_members`, `ready`,
  `listening`, `stats` (`Stats`: broker messages, fan-out sizes by kind, frames dropped, queue high water);
  `on_presence_change` hears of the `PresenceChange`s nobody announced (an instance died).
- `PresenceTicks`: a group's presence changes gathered for a short tick and announced together.
- `Consumer`, `JsonConsumer`, `handler`, `event_filter`, `RateLimit`: the Channels-style layer.
- `HistoryProvider`, `RecoveryOptions`, `HistoryTruncated`: recoverable groups (`Consumer.join_recoverable`):
  every member gets each sequenced event once, in order, missed ones read from the group's history.
- `WebSocketOAuth2PasswordBearer`, `reject`, `token_from`: bearer tokens on WebSockets.
- `WebSocketProxy(client, server_endpoint)`: relays a client WebSocket to an upstream one (the gateway's).

The seed library's README (fastapi-distributed-websocket 0.2.0) runs unchanged on these names: its
functions documented as plain (`send(topic, message)`, `send_by_conn_id(conn_id, message)`, `send_msg`,
`broadcast`, `set_conn_id`, `remove_connection`, `subscribe`, `unsubscribe`, `hanlde_subscription_message`)
take effect whether awaited or not (see `calls`); `connection.topics` is a live set; `WebSocketException(
message, *, connection)`; a broker with only its six methods is accepted as `WebSocketManager(...,
broker=obj)` (see `brokers.adapter`); `await websocket.accept()` then `await WebSocketProxy(ws, url)()`.
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .auth import WebSocketOAuth2PasswordBearer, bearer_subprotocol, reject, token_from
    from .brokers import (
        BrokerInterface,
        BrokerMessage,
        BrokerState,
        InMemoryBroker,
        PresenceDelta,
        RedisBroker,
        RedisClusterBroker,
        create_broker,
    )
    from .brokers.adapter import MinimalBrokerAdapter
    from .calls import Call
    from .connection import Connection, ConnectionState, EventFilter, TopicSet
    from .consumer import Consumer, JsonConsumer
    from .events import event_filter
    from .exceptions import (
        BrokerError,
        BrokerUnavailable,
        ErrorCode,
        InvalidMessage,
        InvalidSubscription,
        InvalidSubscriptionMessage,
        InvalidTopic,
        RealtimeError,
        WebSocketException,
        ahandle,
        error_frame,
        handle,
    )
    from .handlers import HandlerSpec, handler
    from .manager import WebSocketManager
    from .message import Frame, Message
    from .outbox import WRITE_NOW, ServerSend, WriteNow
    from .presence import PresenceChange
    from .presence_ticks import PresenceTicks
    from .proxy import WebSocketProxy
    from .ratelimit import RateLimit
    from .recovery import HistoryProvider, HistoryTruncated, RecoveryOptions
    from .stats import FanoutSizes, Stats
    from .topics import (
        TopicIndex,
        handle_subscription_message,
        hanlde_subscription_message,
        matches,
        subscribe,
        topic_matches,
        unsubscribe,
        validate_filter,
        validate_topic,
    )

# Each name is imported from its module on first use, so that importing one module of the engine (the gateway
# imports `proxy`) does not load the others.
_MODULE_OF = {
    "BrokerError": ".exceptions",
    "BrokerInterface": ".brokers",
    "BrokerMessage": ".brokers",
    "BrokerState": ".brokers",
    "BrokerUnavailable": ".exceptions",
    "Call": ".calls",
    "Connection": ".connection",
    "ConnectionState": ".connection",
    "Consumer": ".consumer",
    "ErrorCode": ".exceptions",
    "EventFilter": ".connection",
    "FanoutSizes": ".stats",
    "Frame": ".message",
    "HandlerSpec": ".handlers",
    "HistoryProvider": ".recovery",
    "HistoryTruncated": ".recovery",
    "InMemoryBroker": ".brokers",
    "InvalidMessage": ".exceptions",
    "InvalidSubscription": ".exceptions",
    "InvalidSubscriptionMessage": ".exceptions",
    "InvalidTopic": ".exceptions",
    "JsonConsumer": ".consumer",
    "Message": ".message",
    "MinimalBrokerAdapter": ".brokers.adapter",
    "PresenceChange": ".presence",
    "PresenceDelta": ".brokers",
    "PresenceTicks": ".presence_ticks",
    "RateLimit": ".ratelimit",
    "RecoveryOptions": ".recovery",
    "RedisBroker": ".brokers",
    "RedisClusterBroker": ".brokers",
    "ServerSend": ".outbox",
    "WRITE_NOW": ".outbox",
    "WriteNow": ".outbox",
    "Stats": ".stats",
    "TopicIndex": ".topics",
    "TopicSet": ".connection",
    "RealtimeError": ".exceptions",
    "WebSocketException": ".exceptions",
    "WebSocketManager": ".manager",
    "WebSocketOAuth2PasswordBearer": ".auth",
    "WebSocketProxy": ".proxy",
    "ahandle": ".exceptions",
    "bearer_subprotocol": ".auth",
    "create_broker": ".brokers",
    "error_frame": ".exceptions",
    "event_filter": ".events",
    "handle": ".exceptions",
    "handle_subscription_message": ".topics",
    "handler": ".handlers",
    "hanlde_subscription_message": ".topics",
    "matches": ".topics",
    "reject": ".auth",
    "subscribe": ".topics",
    "token_from": ".auth",
    "topic_matches": ".topics",
    "unsubscribe": ".topics",
    "validate_filter": ".topics",
    "validate_topic": ".topics",
}

__all__ = [
    "WRITE_NOW",
    "BrokerError",
    "BrokerInterface",
    "BrokerMessage",
    "BrokerState",
    "BrokerUnavailable",
    "Call",
    "Connection",
    "ConnectionState",
    "Consumer",
    "ErrorCode",
    "EventFilter",
    "FanoutSizes",
    "Frame",
    "HandlerSpec",
    "HistoryProvider",
    "HistoryTruncated",
    "InMemoryBroker",
    "InvalidMessage",
    "InvalidSubscription",
    "InvalidSubscriptionMessage",
    "InvalidTopic",
    "JsonConsumer",
    "Message",
    "MinimalBrokerAdapter",
    "PresenceChange",
    "PresenceDelta",
    "PresenceTicks",
    "RateLimit",
    "RealtimeError",
    "RecoveryOptions",
    "RedisBroker",
    "RedisClusterBroker",
    "ServerSend",
    "Stats",
    "TopicIndex",
    "TopicSet",
    "WebSocketException",
    "WebSocketManager",
    "WebSocketOAuth2PasswordBearer",
    "WebSocketProxy",
    "WriteNow",
    "ahandle",
    "bearer_subprotocol",
    "create_broker",
    "error_frame",
    "event_filter",
    "handle",
    "handle_subscription_message",
    "handler",
    "hanlde_subscription_message",
    "matches",
    "reject",
    "subscribe",
    "token_from",
    "topic_matches",
    "unsubscribe",
    "validate_filter",
    "validate_topic",
]


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
