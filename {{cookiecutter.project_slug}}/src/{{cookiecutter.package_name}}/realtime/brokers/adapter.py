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
from collections.abc import Mapping
from typing import Any

from ..message import Message
from .base import BrokerInterface, BrokerMessage
from .memory import InMemoryBroker

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


class MinimalBrokerAdapter(InMemoryBroker):
    """The memory broker, its messages carried by a broker with only the seed library's six methods (see
    module): subscriptions are matched and presence kept in this process, as `memory://` does."""

    def __init__(self, broker: Any, channel: str, *, poll_interval: float = 0.01) -> None:
        super().__init__()
        self.broker = broker
        self.channel = channel
        self.poll_interval = poll_interval

    async def connect(self) -> None:
        await self.broker.connect()
        await self.broker.subscribe(self.channel)
        await super().connect()

    async def disconnect(self) -> None:
        await super().disconnect()
        self._queue = asyncio.Queue()  # what was received and not taken is dropped
        await self.broker.unsubscribe(self.channel)
        await self.broker.disconnect()

    async def publish(self, channel: str, data: Any) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        await self.broker.publish(self.channel, Message(type="broker", topic=channel, data=text))

    async def get_message(self) -> BrokerMessage:
        while self._queue.empty():
            received = await self.broker.get_message()
            if received is None:
                await asyncio.sleep(self.poll_interval)
                continue
            self._route(received)
        return self._queue.get_nowait()

    def _route(self, received: Any) -> None:
        if isinstance(received, Mapping):
            received = Message(
                type=received.get("type", ""), topic=received.get("topic"), data=received.get("data")
            )
        if not isinstance(received, Message) or received.type != "broker" or not received.topic:
            return  # not the engine's traffic: another user of the same channel
        self._deliver(received.topic, str(received.data).encode())
