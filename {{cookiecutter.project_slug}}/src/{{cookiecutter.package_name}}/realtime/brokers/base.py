"""What the manager needs from a pub/sub broker, whichever it is."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["BrokerInterface", "BrokerMessage", "BrokerState"]


class BrokerState(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"


@dataclass(frozen=True, slots=True)
class BrokerMessage:
    """A message received on `channel`; `pattern` is the glob subscription that matched it, if any."""

    channel: str
    data: bytes
    pattern: str | None = None


class BrokerInterface(ABC):
    """Pub/sub on named channels plus glob pattern subscriptions, with Redis semantics.

    `subscribe` returns once the broker has confirmed the subscription, so a message published after it
    returns is received. A message matching several pattern subscriptions is received once per pattern.
    Delivery is at most once: what is published while the broker is unreachable is lost.

    The presence methods keep expiring sets: each member carries a deadline `ttl` seconds after it was
    last added, and members past their deadline are no longer reported (they are evicted on read).
    """

    @property
    @abstractmethod
    def state(self) -> BrokerState:
        """Whether the subscriptions are live (`connected`) or being restored (`reconnecting`)."""

    @property
    def last_error(self) -> str | None:
        """The last connection error seen, for health reports; None when there was none."""
        return None

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...

    @abstractmethod
    async def subscribe(self, *channels: str) -> None: ...

    @abstractmethod
    async def unsubscribe(self, *channels: str) -> None: ...

    @abstractmethod
    async def psubscribe(self, *patterns: str) -> None: ...

    @abstractmethod
    async def punsubscribe(self, *patterns: str) -> None: ...

    @abstractmethod
    async def publish(self, channel: str, data: bytes) -> None: ...

    @abstractmethod
    async def get_message(self) -> BrokerMessage:
        """The next message received on a subscribed channel or pattern; waits as long as it takes."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the broker answers; raise when it cannot be reached."""

    @abstractmethod
    async def presence_add(self, key: str, members: Collection[str], ttl: float) -> None: ...

    @abstractmethod
    async def presence_remove(self, key: str, members: Collection[str]) -> None: ...

    @abstractmethod
    async def presence_members(self, key: str) -> list[str]: ...
