"""A broker inside one process: the `memory://` URL, for development and single-instance deployments."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from ..message import Message
from .base import BrokerInterface, BrokerMessage, BrokerState, PresenceDelta, encode_payload

__all__ = ["InMemoryBroker", "glob_match"]


@lru_cache(maxsize=4096)
def _compile_glob(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            parts.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        parts.append(".*" if char == "*" else re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


def glob_match(pattern: str, name: str) -> bool:
    """Whether `name` matches the Redis glob `pattern`, as the engine writes them: `*` and `\\` escapes
    (`topics.filter_to_glob` and `escape_glob`), so every other character stands for itself."""
    return _compile_glob(pattern).fullmatch(name) is not None


class _PresenceSet:
    """One expiring set: the deadline of each (id, member) entry, and how many entries each member has."""

    def __init__(self) -> None:
        self.deadlines: dict[tuple[str, str], float] = {}
        self.counts: Counter[str] = Counter()
        self.next_expiry = math.inf

    def update(
        self, add: Iterable[tuple[str, str]], remove: Iterable[tuple[str, str]], ttl: float
    ) -> PresenceDelta:
        now = time.monotonic()
        before: dict[str, int] = {}

        def count(entry: tuple[str, str], change: int) -> None:
            member = entry[1]
            before.setdefault(member, self.counts[member])
            self.counts[member] += change
            if not self.counts[member]:
                del self.counts[member]

        if now >= self.next_expiry:
            for entry in [entry for entry, deadline in self.deadlines.items() if deadline <= now]:
                del self.deadlines[entry]
                count(entry, -1)
            self.next_expiry = min(self.deadlines.values(), default=math.inf)
        for entry in remove:
            if self.deadlines.pop(entry, None) is not None:
                count(entry, -1)
        for entry in add:
            if entry not in self.deadlines:
                count(entry, 1)
            self.deadlines[entry] = now + ttl
            self.next_expiry = min(self.next_expiry, now + ttl)
        return PresenceDelta(
            joined=frozenset(member for member, had in before.items() if not had and self.counts[member]),
            left=frozenset(member for member, had in before.items() if had and not self.counts[member]),
            present=len(self.counts),
        )

    def members(self) -> set[str]:
        now = time.monotonic()
        if now < self.next_expiry:  # no entry has expired: the members counted are those present
            return set(self.counts)
        return {member for (_, member), deadline in self.deadlines.items() if deadline > now}


class InMemoryBroker(BrokerInterface):
    """Channels and patterns of one process; messages wait in an unbounded queue for `get_message`."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[BrokerMessage] = asyncio.Queue()
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._presence: dict[str, _PresenceSet] = {}
        self._state = BrokerState.DISCONNECTED

    @property
    def state(self) -> BrokerState:
        return self._state

    async def connect(self) -> None:
        self._state = BrokerState.CONNECTED

    async def disconnect(self) -> None:
        self._state = BrokerState.DISCONNECTED
        self._channels.clear()
        self._patterns.clear()

    async def subscribe(self, *channels: str) -> None:
        self._channels.update(channels)

    async def unsubscribe(self, *channels: str) -> None:
        self._channels.difference_update(channels)

    async def psubscribe(self, *patterns: str) -> None:
        self._patterns.update(patterns)

    async def punsubscribe(self, *patterns: str) -> None:
        self._patterns.difference_update(patterns)

    async def publish(self, channel: str, data: bytes | str | Message | Mapping[str, Any]) -> None:
        """Publish `data` (a `Message` or a dict is sent as its JSON) to `channel`."""
        self._deliver(channel, encode_payload(data))

    async def get_message(self) -> BrokerMessage:
        return await self._queue.get()

    def _deliver(self, channel: str, data: bytes) -> None:
        """Queue a message on `channel` as Redis would: once if the channel is subscribed, and once for each
        subscribed pattern that matches it."""
        if channel in self._channels:
            self._queue.put_nowait(BrokerMessage(channel, data))
        for pattern in self._patterns:
            if glob_match(pattern, channel):
                self._queue.put_nowait(BrokerMessage(channel, data, pattern))

    async def presence_update(
        self,
        key: str,
        *,
        add: Mapping[str, str] | None = None,
        remove: Mapping[str, str] | None = None,
        ttl: float,
    ) -> PresenceDelta:
        presence = self._presence.get(key)
        if presence is None:
            presence = self._presence[key] = _PresenceSet()
        delta = presence.update((add or {}).items(), (remove or {}).items(), ttl)
        if not presence.deadlines:
            del self._presence[key]
        return delta

    async def presence_members(self, key: str) -> set[str]:
        presence = self._presence.get(key)
        return presence.members() if presence is not None else set()
