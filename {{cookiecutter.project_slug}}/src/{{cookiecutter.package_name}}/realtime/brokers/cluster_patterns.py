"""Pattern subscriptions on sharded pub/sub, which has none: the pieces the cluster broker builds them from.

A glob without wildcards (`chat:topic:users/alice/notifications`, escaped) is an exact channel and is
subscribed as one. A glob with wildcards gets a sharded channel of its own, `PATTERN_CHANNEL_PREFIX +
glob`, and an entry in a registry shared by the instances (a presence set, so entries of dead instances
expire): a publisher sends each message to its channel and to the channel of every registered glob that
matches it. A message can so reach an instance on several channels; every copy carries the same random id,
and the first copy received stands for all (`Frame`, `RecentIds`).
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["PATTERN_CHANNEL_PREFIX", "Frame", "RecentIds", "glob_literal", "pattern_channel"]

PATTERN_CHANNEL_PREFIX = "__pattern__:"
_GLOB_WILDCARDS = frozenset("*?[")
_HEADER = struct.Struct(">8sI")  # the message id, the length of the channel's name


def glob_literal(pattern: str) -> str | None:
    """The one name the Redis glob `pattern` matches, or None if it has a wildcard."""
    literal: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            literal.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in _GLOB_WILDCARDS:
            return None
        else:
            literal.append(char)
    if escaped:
        literal.append("\\")
    return "".join(literal)


def pattern_channel(pattern: str) -> str:
    """The sharded channel that carries the messages matching the wildcard glob `pattern`."""
    return PATTERN_CHANNEL_PREFIX + pattern


@dataclass(frozen=True, slots=True)
class Frame:
    """A message as it travels on a sharded channel: its id, the channel it was published to, the data."""

    id: bytes
    channel: str
    data: bytes

    @classmethod
    def new(cls, channel: str, data: bytes) -> Frame:
        return cls(os.urandom(8), channel, data)

    def encode(self) -> bytes:
        name = self.channel.encode()
        return _HEADER.pack(self.id, len(name)) + name + self.data

    @classmethod
    def decode(cls, raw: bytes) -> Frame:
        """The frame in `raw`; `ValueError` if it is not one."""
        if len(raw) < _HEADER.size:
            raise ValueError("a frame shorter than its header")
        message_id, length = _HEADER.unpack_from(raw)
        end = _HEADER.size + length
        if len(raw) < end:
            raise ValueError("a frame shorter than its channel's name")
        return cls(message_id, raw[_HEADER.size : end].decode(), raw[end:])


class RecentIds:
    """The ids of the last `size` messages received, to recognise a second copy of one."""

    def __init__(self, size: int = 16384) -> None:
        self.size = size
        self._ids: OrderedDict[bytes, None] = OrderedDict()

    def first_time(self, message_id: bytes) -> bool:
        """Record `message_id`; whether it was not seen among the last `size`."""
        if message_id in self._ids:
            return False
        self._ids[message_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True
