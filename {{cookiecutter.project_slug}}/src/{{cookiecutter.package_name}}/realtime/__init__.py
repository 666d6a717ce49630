"""The realtime engine: WebSocket connections of many instances joined through a broker.

It imports nothing from the rest of the service and could be a library of its own.

- `topics`: MQTT filters, `validate_filter`, `topic_matches`, `matches(topic, patterns)`, `TopicIndex`.
- `Message(type, topic=None, conn_id=None, data=None)`: the library's pub/sub protocol (`subscribe`,
  `unsubscribe`, `broadcast`, `send`, `send_by_conn_id`), `from_client_message`, `__serialize__`.
- `create_broker(url)`: `InMemoryBroker` (`memory://`), `RedisBroker` (`redis://`, `rediss://`, `unix://`).
"""

from .brokers import BrokerInterface, BrokerMessage, BrokerState, InMemoryBroker, RedisBroker, create_broker
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
from .message import Frame, Message
from .topics import TopicIndex, matches, topic_matches, validate_filter, validate_topic

__all__ = [
    "BrokerInterface",
    "BrokerMessage",
    "BrokerState",
    "ErrorCode",
    "Frame",
    "InMemoryBroker",
    "InvalidMessage",
    "InvalidSubscription",
    "InvalidSubscriptionMessage",
    "InvalidTopic",
    "Message",
    "RedisBroker",
    "TopicIndex",
    "WebSocketException",
    "ahandle",
    "create_broker",
    "error_frame",
    "handle",
    "matches",
    "topic_matches",
    "validate_filter",
    "validate_topic",
]
