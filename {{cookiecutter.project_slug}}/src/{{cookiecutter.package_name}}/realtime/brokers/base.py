"""What the manager needs from a pub/sub broker, whichever it is."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..message import Message, encode_frame

__all__ = ["BrokerInterface", "BrokerMessage", "BrokerState", "PresenceDelta", "encode_payload"]


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


def encode_payload(data: bytes | str | Message | Mapping[str, Any]) -> bytes:
    """What travels on a channel: bytes as they are, text as UTF-8, a `Message` or a dict as its JSON."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return encode_frame(data).encode()


@dataclass(frozen=True, slots=True)
class PresenceDelta:
    """What a presence update changed: members absent before and present after, and the reverse; and how
    many members the set has after it (None: the broker does not say)."""

    joined: frozenset[str] = frozenset()
    left: frozenset[str] = frozenset()
    present: int | None = None


class BrokerInterface(ABC):
    """Pub/sub on named channels plus glob pattern subscriptions, with Redis semantics.

    `subscribe` returns once the broker has confirmed the subscription, so a message published after it
    returns is received. A message matching several pattern subscriptions is received once per pattern.
    Delivery is at most once. While the broker is unreachable, `subscribe` and `unsubscribe` record the
    change and return at once (it takes effect when the connection is restored, and what was published in
    between is not received), and `publish`, `ping` and the presence methods raise `BrokerUnavailable`
    (nothing was done).

    Presence is kept in expiring sets: each entry (an id, say a connection's, and a member, say a user)
    carries a deadline `ttl` seconds after it was last added, and a member is present while one of its
    entries is. Entries past their deadline are no longer counted as present by `presence_members`, and are
    evicted by the next `presence_update` of their set, which reports the members they leave absent.

    A broker written to the seed library's interface overrides only its six methods (`connect`,
    `disconnect`, `subscribe`, `unsubscribe`, `publish(channel, message)` and `get_message()`, which
    returns a `Message` or None); `WebSocketManager` runs such a broker through `MinimalBrokerAdapter`,
    which provides the rest. The defaults below are what such a broker gets.
    """

    @property
    def state(self) -> BrokerState:
        """Whether the subscriptions are live (`connected`) or being restored (`reconnecting`)."""
        return BrokerState.CONNECTED

    @property
    def last_error(self) -> str | None:
        """The last connection error seen, for health reports; None when there was none."""
        return None

    @property
    def reconnects(self) -> int:
        """Times the connection was lost and restored, subscriptions included; 0 if it cannot be lost."""
        return 0

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...

    @abstractmethod
    async def subscribe(self, *channels: str) -> None: ...

    @abstractmethod
    async def unsubscribe(self, *channels: str) -> None: ...

    async def psubscribe(self, *patterns: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no pattern subscriptions")

    async def punsubscribe(self, *patterns: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no pattern subscriptions")

    @abstractmethod
    async def publish(self, channel: str, data: Any) -> None:
        """Publish to `channel`: the engine passes bytes; a seed-library broker receives a `Message`."""

    @abstractmethod
    async def get_message(self) -> Any:
        """The next message received on a subscribed channel or pattern, as a `BrokerMessage`; waits as
        long as it takes. A seed-library broker returns a `Message`, or None when there is none yet."""

    async def ping(self) -> None:  # noqa: B027 - a broker with no way to ask is taken to answer
        """Return when the broker answers; raise when it cannot be reached."""

    async def presence_update(
        self,
        key: str,
        *,
        add: Mapping[str, str] | None = None,
        remove: Mapping[str, str] | None = None,
        ttl: float,
    ) -> PresenceDelta:
        """In one atomic step: evict the expired entries of the set `key`, remove the entries `remove`, and
        add `add` (or push back their deadline) to expire in `ttl` seconds; both map entry ids (which have
        no `:`) to members. Returns the members this made present or absent, counting entries that expired
        as present until evicted: each change is reported once, to one caller, on whichever instance. Its
        `present` counts the members left once the expired entries are evicted."""
        raise NotImplementedError(f"{type(self).__name__} keeps no presence")

    async def presence_members(self, key: str) -> set[str]:
        """The members of the set `key` with an entry that has not expired."""
        raise NotImplementedError(f"{type(self).__name__} keeps no presence")
