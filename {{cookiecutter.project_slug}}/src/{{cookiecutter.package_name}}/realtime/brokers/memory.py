"""A broker inside one process: the `memory://` URL, for development and single-instance deployments."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Collection
from functools import lru_cache

from .base import BrokerInterface, BrokerMessage, BrokerState

__all__ = ["InMemoryBroker", "glob_match"]


def _translate_class(pattern: str, start: int) -> tuple[str, int] | None:
    """The regex for the `[...]` class opening at `start`, and the index after it; None if unterminated."""
    index = start + 1
    negate = index < len(pattern) and pattern[index] == "^"
    index += negate
    parts: list[str] = []
    while index < len(pattern) and pattern[index] != "]":
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            index += 1
            char = pattern[index]
        if index + 2 < len(pattern) and pattern[index + 1] == "-" and pattern[index + 2] != "]":
            low, high = sorted((char, pattern[index + 2]))
            parts.append(f"{re.escape(low)}-{re.escape(high)}")
            index += 3
        else:
            parts.append(re.escape(char))
            index += 1
    if index >= len(pattern):
        return None
    body = "".join(parts)
    if not body:
        return ("(?!)" if not negate else "."), index + 1
    return f"[{'^' if negate else ''}{body}]", index + 1


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
        if char == "[" and (translated := _translate_class(pattern, index)) is not None:
            parts.append(translated[0])
            index = translated[1]
            continue
        parts.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


def glob_match(pattern: str, name: str) -> bool:
    """Whether `name` matches the Redis glob `pattern` (`*`, `?`, `[a-z]`, `[^a]`, `\\` escapes)."""
    return _compile_glob(pattern).fullmatch(name) is not None


class InMemoryBroker(BrokerInterface):
    """Channels and patterns of one process; messages wait in an unbounded queue for `get_message`."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[BrokerMessage] = asyncio.Queue()
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._presence: dict[str, dict[str, float]] = {}
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

    async def publish(self, channel: str, data: bytes) -> None:
        if channel in self._channels:
            self._queue.put_nowait(BrokerMessage(channel, data))
        for pattern in self._patterns:
            if glob_match(pattern, channel):
                self._queue.put_nowait(BrokerMessage(channel, data, pattern))

    async def get_message(self) -> BrokerMessage:
        return await self._queue.get()

    async def ping(self) -> None:
        return None

    async def presence_add(self, key: str, members: Collection[str], ttl: float) -> None:
        deadline = time.monotonic() + ttl
        entries = self._presence.setdefault(key, {})
        entries.update(dict.fromkeys(members, deadline))

    async def presence_remove(self, key: str, members: Collection[str]) -> None:
        entries = self._presence.get(key, {})
        for member in members:
            entries.pop(member, None)
        if not entries:
            self._presence.pop(key, None)

    async def presence_members(self, key: str) -> list[str]:
        now = time.monotonic()
        entries = self._presence.get(key, {})
        for member in [member for member, deadline in entries.items() if deadline <= now]:
            del entries[member]
        if not entries:
            self._presence.pop(key, None)
        return list(entries)
