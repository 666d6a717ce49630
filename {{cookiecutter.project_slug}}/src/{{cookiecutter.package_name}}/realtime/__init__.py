"""The realtime engine: WebSocket connections of many instances joined through a broker.

It imports nothing from the rest of the service and could be a library of its own.

- `topics`: MQTT filters, `validate_filter`, `topic_matches`, `matches(topic, patterns)`, `TopicIndex`.
- `Message(type, topic=None, conn_id=None, data=None)`: the library's pub/sub protocol (`subscribe`,
  `unsubscribe`, `broadcast`, `send`, `send_by_conn_id`), `from_client_message`, `__serialize__`.
- `create_broker(url)`: `InMemoryBroker` (`memory://`), `RedisBroker` (`redis://`, `rediss://`, `unix://`).
- `Connection`: one socket, its `id`, `topics` and `groups`, a bounded queue and one writer task.
- `WebSocketManager`: `broadcast`, `send` (topic), `send_by_conn_id`, `send_msg`, `receive`, `group_add`,
  `group_discard`, `group_send`, `presence_join`, `presence_leave`, `presence_members`, `ready`, `stats`.
"""

from .brokers import BrokerInterface, BrokerMessage, BrokerState, InMemoryBroker, RedisBroker, create_broker
from .connection import Connection, ConnectionState
from .exceptions import (
    ErrorCode,
    InvalidMessage,
    InvalidSubscription,
    InvalidSubscriptionMessage,
    InvalidTopic,
    WebSocketException,
    ahandle,
    error_frame,
    handle,
)
from .manager import WebSocketManager
from .message import Frame, Message
from .routing import Stats
from .topics import (
    TopicIndex,
    handle_subscription_message,
    matches,
    subscribe,
    topic_matches,
    unsubscribe,
    validate_filter,
    validate_topic,
)

__all__ = [
    "BrokerInterface",
    "BrokerMessage",
    "BrokerState",
    "Connection",
    "ConnectionState",
    "ErrorCode",
    "Frame",
    "InMemoryBroker",
    "InvalidMessage",
    "InvalidSubscription",
    "InvalidSubscriptionMessage",
    "InvalidTopic",
    "Message",
    "RedisBroker",
    "Stats",
    "TopicIndex",
    "WebSocketException",
    "WebSocketManager",
    "ahandle",
    "create_broker",
    "error_frame",
    "handle",
    "handle_subscription_message",
    "matches",
    "subscribe",
    "topic_matches",
    "unsubscribe",
    "validate_filter",
    "validate_topic",
]
