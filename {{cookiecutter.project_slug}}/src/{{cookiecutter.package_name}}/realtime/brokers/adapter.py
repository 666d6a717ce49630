"""A broker written to the seed library's interface, run by the engine.

Such a broker has six methods: `connect()`, `disconnect()`, `subscribe(channel)`, `unsubscribe(channel)`,
`publish(channel, message)` and `get_message()`, which returns a `Message` (or a dict of one) or None when
nothing has arrived. `MinimalBrokerAdapter` gives the engine everything else on top of it:

- all the engine's traffic goes over one channel of that broker (the manager's `broker_channel`), each
  message a `Message` of type `broker` whose `topic` is the engine channel and `data` the encoded frame;
  channel and pattern subscriptions are matched in this process;
- presence is kept in this process only, so it is right for one instance and wrong across several: a
  manager that needs shared presence (`on_presence_change`) refuses such a broker when it starts;
- `ping` is answered by the adapter, and `state` is `connected` once `connect()` returned;
- `get_message()` returning None is polled again every `poll_interval` seconds.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Mapping
from typing import Any

from ..message import Message
from .base import BrokerInterface, BrokerMessage, BrokerState, PresenceDelta
from .memory import InMemoryBroker, glob_match

__all__ = ["MinimalBrokerAdapter", "adapt_broker", "is_minimal"]

ENGINE_METHODS = ("psubscribe", "punsubscribe", "presence_update", "presence_members")


def is_minimal(broker: object) -> bool:
    """Whether `broker` lacks the engine's methods (patterns, presence) and needs the adapter."""
    if isinstance(broker, BrokerInterface):
        return any(getattr(type(broker), name) is getattr(BrokerInterface, name) for name in ENGINE_METHODS)
    return True


def adapt_broker(broker: object, channel: str) -> BrokerInterface:
    """`broker` (an object, or a class to instantiate) as the engine's broker; adapted if minimal."""
    if inspect.isclass(broker):
        broker = broker()
    for method in ("connect", "disconnect", "subscribe", "unsubscribe", "publish", "get_message"):
        if not callable(getattr(broker, method, None)):
            raise TypeError(f"{type(broker).__name__} is not a broker: it has no {method}() method")
    if is_minimal(broker):
        return MinimalBrokerAdapter(broker, channel)
    assert isinstance(broker, BrokerInterface)
    return broker


class MinimalBrokerAdapter(BrokerInterface):
    """The engine's broker interface on a broker with only the seed library's six methods (see module)."""

    shares_presence = False

    def __init__(self, broker: Any, channel: str, *, poll_interval: float = 0.01) -> None:
        self.broker = broker
        self.channel = channel
        self.poll_interval = poll_interval
        self._state = BrokerState.DISCONNECTED
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._received: deque[BrokerMessage] = deque()
        self._presence = InMemoryBroker()

    @property
    def state(self) -> BrokerState:
        return self._state

    async def connect(self) -> None:
        await self.broker.connect()
        await self.broker.subscribe(self.channel)
        await self._presence.connect()
        self._state = BrokerState.CONNECTED

    async def disconnect(self) -> None:
        self._state = BrokerState.DISCONNECTED
        self._channels.clear()
        self._patterns.clear()
        self._received.clear()
        await self._presence.disconnect()
        await self.broker.unsubscribe(self.channel)
        await self.broker.disconnect()

    async def subscribe(self, *channels: str) -> None:
        self._channels.update(channels)

    async def unsubscribe(self, *channels: str) -> None:
        self._channels.difference_update(channels)

    async def psubscribe(self, *patterns: str) -> None:
        self._patterns.update(patterns)

    async def punsubscribe(self, *patterns: str) -> None:
        self._patterns.difference_update(patterns)

    async def publish(self, channel: str, data: Any) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        await self.broker.publish(self.channel, Message(type="broker", topic=channel, data=text))

    async def get_message(self) -> BrokerMessage:
        while not self._received:
            received = await self.broker.get_message()
            if received is None:
                await asyncio.sleep(self.poll_interval)
                continue
            self._route(received)
        return self._received.popleft()

    async def ping(self) -> None:
        return None

    async def presence_update(
        self,
        key: str,
        *,
        add: Mapping[str, str] | None = None,
        remove: Mapping[str, str] | None = None,
        ttl: float,
    ) -> PresenceDelta:
        return await self._presence.presence_update(key, add=add, remove=remove, ttl=ttl)

    async def presence_members(self, key: str) -> set[str]:
        return await self._presence.presence_members(key)

    def _route(self, received: Any) -> None:
        if isinstance(received, Mapping):
            received = Message(
                type=received.get("type", ""), topic=received.get("topic"), data=received.get("data")
            )
        if not isinstance(received, Message) or received.type != "broker" or not received.topic:
            return  # not the engine's traffic: another user of the same channel
        channel, data = received.topic, str(received.data).encode()
        if channel in self._channels:
            self._received.append(BrokerMessage(channel, data))
        for pattern in self._patterns:
            if glob_match(pattern, channel):
                self._received.append(BrokerMessage(channel, data, pattern))
