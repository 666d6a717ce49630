"""The notifications consumer of `/ws/notifications`: MQTT-style topics, in the engine's pub/sub protocol.

The client sends `subscribe` and `unsubscribe` {topic: an MQTT filter}, answered with `subscribed` and
`unsubscribed`, and, only where `NOTIFICATIONS_CLIENT_PUBLISH` is true, `send` {topic, data}. The server sends
`notification` {topic, data} for each message published to a topic that one of the connection's filters
matches, from any instance.

Topics under `users/<username>/` belong to that user. Every connection of a user is subscribed from the start
to `users/<username>/notifications`, where `POST /notifications` with a `username` publishes. A filter that
could match a topic of another user (`#`, `users/#`, `users/+/...`, `users/bob/...`, `+/+`, `+/bob/...`) is
refused with `forbidden`, and so is publishing into another user's topics.

What a client can make the service hold is bounded: a filter longer than `WS_MAX_TOPIC_FILTER_BYTES`, or one
more than `WS_MAX_SUBSCRIPTIONS_PER_CONNECTION` on the socket, `WS_MAX_WILDCARD_SUBSCRIPTIONS_PER_CONNECTION`
wildcard filters on the socket, or `WS_MAX_SUBSCRIPTIONS_PER_USER` on all the user's sockets of this instance,
is refused with `limit_exceeded` and the socket stays open. A filter without wildcards costs the broker one
channel subscription; only wildcard filters are pattern subscriptions, shared by all who hold the same one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, JsonValue

from ..realtime import Message, RealtimeError, handler, validate_filter, validate_topic
from ..realtime.topics import MULTI_LEVEL, SINGLE_LEVEL
from .base import SessionEnded, UserConsumer

USERS_LEVEL = "users"


def user_topic(username: str) -> str:
    """Where the notifications of one user are published."""
    return f"{USERS_LEVEL}/{username}/notifications"


def reaches_other_users(topic: str, username: str) -> bool:
    """Whether a valid topic name or filter could match a topic of a user other than `username`.

    Those are `users/<name>` and everything under it; `users` itself and `users/<username>/...` are fine.
    """
    first, *rest = topic.split("/")
    if first == MULTI_LEVEL:
        return True
    if first not in (USERS_LEVEL, SINGLE_LEVEL) or not rest:
        return False
    return rest[0] != username


class Subscribe(BaseModel):
    """Receive what is published to every topic the MQTT filter matches (`+`: one level, `#`: the rest)."""

    type: Literal["subscribe"]
    topic: str = Field(examples=["orders/+/status", "users/alice/#"])


class Unsubscribe(BaseModel):
    """Stop receiving what a filter of an earlier `subscribe` matched."""

    type: Literal["unsubscribe"]
    topic: str = Field(examples=["orders/+/status"])


class Publish(BaseModel):
    """Publish to a topic, when the service lets clients do so."""

    type: Literal["send"]
    topic: str = Field(examples=["orders/7/status"])
    data: JsonValue = Field(default=None, examples=[{"state": "shipped"}])


class Subscribed(BaseModel):
    type: Literal["subscribed"] = "subscribed"
    topic: str = Field(examples=["orders/+/status"])


class Unsubscribed(BaseModel):
    type: Literal["unsubscribed"] = "unsubscribed"
    topic: str = Field(examples=["orders/+/status"])


class Notification(BaseModel):
    """Something published to a topic that one of the connection's filters matches."""

    type: Literal["notification"] = "notification"
    topic: str = Field(examples=["orders/7/status"])
    data: JsonValue = Field(default=None, examples=[{"state": "shipped"}])


def notification(topic: str, data: JsonValue) -> Message:
    """The message that publishes a notification; the frame its subscribers receive is a `Notification`."""
    return Message(type="notification", topic=topic, data=data)


class NotificationConsumer(UserConsumer):
    """One connection of a user to the notifications."""

    sends = (Notification, SessionEnded)

    async def connect(self) -> None:
        self.user = await self.authenticate()
        await self.accept()
        await self.subscribe(user_topic(self.user.username))

    @handler(sends=[Subscribed])
    async def on_subscribe(self, message: Subscribe) -> Subscribed:
        """Subscribe to a filter, unless it could match another user's topics or exceed a limit."""
        self.refuse_long_topic(message.topic)
        validate_filter(message.topic)
        self.refuse_other_users(message.topic)
        self.refuse_over_limits(message.topic)
        await self.subscribe(message.topic)
        return Subscribed(topic=message.topic)

    @handler(sends=[Unsubscribed])
    async def on_unsubscribe(self, message: Unsubscribe) -> Unsubscribed:
        """Unsubscribe from a filter; unsubscribing from one never subscribed to is not an error."""
        self.refuse_long_topic(message.topic)
        validate_filter(message.topic)
        await self.unsubscribe(message.topic)
        return Unsubscribed(topic=message.topic)

    @handler(sends=[Notification])
    async def on_send(self, message: Publish) -> None:
        """Publish a notification to a topic, if the settings allow clients to."""
        if not self.settings.notifications_client_publish:
            raise RealtimeError("clients may not publish on this service", code="forbidden")
        self.refuse_long_topic(message.topic)
        validate_topic(message.topic)
        self.refuse_other_users(message.topic)
        await self.manager.send(notification(message.topic, message.data))

    def refuse_other_users(self, topic: str) -> None:
        if reaches_other_users(topic, self.user.username):
            raise RealtimeError(
                f"{topic!r} reaches other users' topics; yours are {USERS_LEVEL}/{self.user.username}/#",
                code="forbidden",
            )

    def refuse_long_topic(self, topic: str) -> None:
        limit = self.settings.ws_max_topic_filter_bytes
        if len(topic) > limit or len(topic.encode("utf-8", "replace")) > limit:
            raise RealtimeError(f"topics are limited to {limit} bytes", code="limit_exceeded")

    def refuse_over_limits(self, topic_filter: str) -> None:
        """Raise `limit_exceeded` if holding one more filter would exceed a subscription limit."""
        connection = self.connection
        if connection is None or topic_filter in connection.topics:
            return
        per_connection = self.settings.ws_max_subscriptions_per_connection
        if len(connection.topics) >= per_connection:
            raise RealtimeError(
                f"at most {per_connection} subscriptions per connection", code="limit_exceeded"
            )
        wildcards = self.settings.ws_max_wildcard_subscriptions_per_connection
        if is_wildcard(topic_filter) and sum(map(is_wildcard, connection.topics)) >= wildcards:
            raise RealtimeError(
                f"at most {wildcards} filters with '+' or '#' per connection", code="limit_exceeded"
            )
        per_user = self.settings.ws_max_subscriptions_per_user
        if sum(len(other.topics) for other in self.manager.connections_by_id(connection.id)) >= per_user:
            raise RealtimeError(f"at most {per_user} subscriptions per user", code="limit_exceeded")


def is_wildcard(topic_filter: str) -> bool:
    return SINGLE_LEVEL in topic_filter or MULTI_LEVEL in topic_filter
