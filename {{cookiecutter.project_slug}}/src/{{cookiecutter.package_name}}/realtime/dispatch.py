"""Which local connections want which frames, so which broker channels this instance listens to; and the
listener, which hands each message the broker delivers to those connections.

Channel names all start with the manager's `broker_channel` prefix, so that services (and test runs) can
share one Redis: `<prefix>:broadcast` (always), `<prefix>:conn:<id>` while a local connection has that id,
`<prefix>:group:<name>` while the group has a local member, and `<prefix>:topic:<topic>` for topic messages.
A filter without wildcards is a plain channel subscription on its topic's channel; only a wildcard filter
needs a pattern subscription (one per distinct glob held locally, shared by every connection holding it), so
the patterns that Redis checks every PUBLISH against are as few as the wildcard filters in use.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from .brokers import BrokerInterface, BrokerMessage
from .connection import Connection
from .message import Envelope, loads
from .outbox import Filtered
from .recovery import Stream, seq_of
from .stats import Stats
from .topics import MULTI_LEVEL, SINGLE_LEVEL, TopicIndex, escape_glob, filter_to_glob

__all__ = ["Dispatcher"]

logger = logging.getLogger(__name__)


def is_exact(topic_filter: str) -> bool:
    """Whether a valid filter has no wildcard, and so matches exactly the topic of the same name."""
    return SINGLE_LEVEL not in topic_filter and MULTI_LEVEL not in topic_filter


def decode_event(frame: str) -> Mapping[str, Any]:
    """A group event's frame decoded once for all its recipients, read-only; `ValueError` if not an object."""
    decoded = loads(frame)
    if not isinstance(decoded, dict):
        raise ValueError("an event for a consumer must be a JSON object")
    return MappingProxyType(decoded)


class _Subscriptions:
    """Broker subscriptions counted by holder: subscribe for the first, unsubscribe after the last."""

    def __init__(
        self, subscribe: Callable[[str], Awaitable[None]], unsubscribe: Callable[[str], Awaitable[None]]
    ) -> None:
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._holders: dict[str, int] = {}
        self._pending: dict[str, asyncio.Future[None]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._holders

    async def acquire(self, name: str) -> None:
        """Return once the broker delivers `name` to this instance."""
        holders = self._holders.get(name, 0)
        self._holders[name] = holders + 1
        if holders:
            if (pending := self._pending.get(name)) is not None:
                await asyncio.shield(pending)
            return
        pending = self._pending[name] = asyncio.get_running_loop().create_future()
        try:
            await self._subscribe(name)
        finally:
            pending.set_result(None)
            if self._pending.get(name) is pending:
                del self._pending[name]

    async def release(self, name: str) -> None:
        holders = self._holders.get(name, 0) - 1
        if holders > 0:
            self._holders[name] = holders
        elif holders == 0:
            del self._holders[name]
            await self._unsubscribe(name)


class Dispatcher:
    """The local side of the manager: connection indexes, broker subscriptions, and local delivery."""

    def __init__(
        self, broker: BrokerInterface, prefix: str, stats: Stats, streams: Mapping[str, Stream]
    ) -> None:
        self.broker = broker
        self.prefix = prefix
        self.stats = stats
        self.streams = streams
        """The recoverable groups with local members, by name: they take their sequenced events."""
        self.connections: set[Connection] = set()
        self.channels = _Subscriptions(broker.subscribe, broker.unsubscribe)
        self.patterns = _Subscriptions(broker.psubscribe, broker.punsubscribe)
        self._by_id: dict[str, set[Connection]] = {}
        self._groups: dict[str, set[Connection]] = {}
        self._topics: TopicIndex[Connection] = TopicIndex()
        self._last_topic_message: str | None = None

    def channel(self, kind: str, target: str = "") -> str:
        return f"{self.prefix}:{kind}:{target}" if kind != "broadcast" else f"{self.prefix}:broadcast"

    def topic_pattern(self, topic_filter: str) -> str:
        return escape_glob(f"{self.prefix}:topic:") + filter_to_glob(topic_filter)

    def members(self, group: str) -> frozenset[Connection]:
        return frozenset(self._groups.get(group, ()))

    def by_id(self, conn_id: str) -> frozenset[Connection]:
        return frozenset(self._by_id.get(conn_id, ()))

    async def add(self, connection: Connection) -> None:
        if connection in self.connections:
            return
        self.connections.add(connection)
        connection.attach(self)
        await self._index_id(connection, connection.id)
        for topic_filter in connection.topics:
            await self.topic_added(connection, topic_filter)
        for group in connection.groups:
            await self.group_added(connection, group)

    async def remove(self, connection: Connection) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        connection.attach(None)
        await self._unindex_id(connection, connection.id)
        for topic_filter in connection.topics:
            await self.topic_removed(connection, topic_filter)
        for group in connection.groups:
            await self.group_removed(connection, group)

    async def topic_added(self, connection: Connection, topic_filter: str) -> None:
        self._topics.add(topic_filter, connection)
        if is_exact(topic_filter):
            await self.channels.acquire(self.channel("topic", topic_filter))
        else:
            await self.patterns.acquire(self.topic_pattern(topic_filter))

    async def topic_removed(self, connection: Connection, topic_filter: str) -> None:
        self._topics.discard(topic_filter, connection)
        if is_exact(topic_filter):
            await self.channels.release(self.channel("topic", topic_filter))
        else:
            await self.patterns.release(self.topic_pattern(topic_filter))

    async def group_added(self, connection: Connection, group: str) -> None:
        self._groups.setdefault(group, set()).add(connection)
        await self.channels.acquire(self.channel("group", group))

    async def group_removed(self, connection: Connection, group: str) -> None:
        members = self._groups.get(group, set())
        members.discard(connection)
        if not members:
            self._groups.pop(group, None)
        await self.channels.release(self.channel("group", group))

    async def id_changed(self, connection: Connection, previous: str) -> None:
        await self._unindex_id(connection, previous)
        await self._index_id(connection, connection.id)

    async def _index_id(self, connection: Connection, conn_id: str) -> None:
        self._by_id.setdefault(conn_id, set()).add(connection)
        await self.channels.acquire(self.channel("conn", conn_id))

    async def _unindex_id(self, connection: Connection, conn_id: str) -> None:
        holders = self._by_id.get(conn_id, set())
        holders.discard(connection)
        if not holders:
            self._by_id.pop(conn_id, None)
        await self.channels.release(self.channel("conn", conn_id))

    async def listen(self) -> None:
        """Dispatch the broker's messages as they come; one that fails is counted and logged, and the next
        one is taken all the same."""
        while True:
            message = await self.broker.get_message()
            try:
                self.dispatch(message)
            except ValueError as error:
                self.stats.malformed_broker_messages += 1
                logger.warning("dropped a malformed message on %s: %s", message.channel, error)
            except Exception:
                self.stats.delivery_errors += 1
                logger.exception("could not deliver a message from %s", message.channel)

    def dispatch(self, message: BrokerMessage) -> None:
        """Queue a broker message's frame on every local connection it is for; `ValueError` if malformed."""
        envelope = Envelope.decode(message.data)
        expected = self.channel(envelope.kind, envelope.target)
        if message.channel != expected:
            raise ValueError(f"an envelope for {expected!r} arrived on {message.channel!r}")
        self.stats.broker_messages += 1
        recipients: Iterable[Connection]
        if envelope.kind == "broadcast":
            recipients = self.connections
        elif envelope.kind == "conn":
            recipients = self._by_id.get(envelope.target, ())
        elif envelope.kind == "group":
            recipients = self._groups.get(envelope.target, ())
            stream = self.streams.get(envelope.target)
            if stream is not None and envelope.event == stream.event_type:
                self.stats.fanned_out("group", self._deliver_sequenced(stream, recipients, envelope))
                return
        elif envelope.kind == "topic":
            # Redis delivers a message once for its channel and once per matching pattern, back to back:
            # the first copy reaches every local filter that matches, so the others are dropped.
            if envelope.id is not None:
                if envelope.id == self._last_topic_message:
                    return
                self._last_topic_message = envelope.id
            recipients = self._topics.match(envelope.target)
        else:
            raise ValueError(f"unknown envelope kind {envelope.kind!r}")
        self.stats.fanned_out(envelope.kind, self._deliver(recipients, envelope))

    def _deliver_sequenced(self, stream: Stream, recipients: Iterable[Connection], envelope: Envelope) -> int:
        """Hand an event of a recoverable group's type to its stream, which checks its seq once for the
        members with a cursor; the other members get it as any group event."""
        event = decode_event(envelope.frame)
        seq = seq_of(event)
        if seq is None:
            return self._deliver(recipients, envelope, event)
        others: list[Connection] = []
        queued = stream.deliver(recipients, envelope.frame, event, seq, others)
        if others:
            queued += self._deliver(others, envelope, event)
        return queued

    def _deliver(
        self, recipients: Iterable[Connection], envelope: Envelope, event: Mapping[str, Any] | None = None
    ) -> int:
        """Queue the frame as it is on each recipient not excluded, unless its consumer takes such events
        through a filter (given the event decoded once for all) or a method (given its own copy).
        Returns the number of connections it was queued for."""
        event_type, exclude = envelope.event, envelope.exclude
        queued = 0
        for connection in recipients:
            if exclude and connection.id in exclude:
                continue
            accept = handler = None
            if event_type is not None and connection.event_filter is not None:
                accept = connection.event_filter(event_type)
            if event_type is not None and accept is None and connection.event_handler is not None:
                handler = connection.event_handler(event_type)
            if accept is None and handler is None:
                queued += connection.deliver(envelope.frame)
                continue
            if event is None:
                event = decode_event(envelope.frame)
            if accept is not None:
                queued += connection.deliver(Filtered(envelope.frame, event, accept))
            elif handler is not None:
                queued += connection.deliver(functools.partial(handler, dict(event)))
        return queued
