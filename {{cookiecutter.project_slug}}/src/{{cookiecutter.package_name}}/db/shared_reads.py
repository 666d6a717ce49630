"""Reads that the callers asking for the same key at the same time share.

A connection storm asks for the same room hundreds of times at once: the first caller starts the read, the
others wait for it, and the next caller once it is done starts a new one. (The accounts of a storm are
many keys, read together: `batched_reads`.)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SharedReads"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedReads(Generic[K, V]):
    """The reads in flight, by key (see the module)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._reading: dict[K, asyncio.Task[V]] = {}

    async def read(self, key: K, read: Callable[[], Awaitable[V]]) -> V:
        """The result of the read of `key` in flight, or of `read()` started now; a caller that gives up
        does not cancel it for the others."""
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(read())
            reading.set_name(self.name)
            if not reading.done():
                self._reading[key] = reading
                reading.add_done_callback(functools.partial(self._done, key))
        return await asyncio.shield(reading)

    def forget(self, stale: Callable[[K], bool]) -> None:
        """Let no caller join the reads in flight of the keys `stale` names: they began too early."""
        for key in [key for key in self._reading if stale(key)]:
            del self._reading[key]

    def _done(self, key: K, reading: asyncio.Task[V]) -> None:
        """Forget a read once done; its failure reached whoever still waited for it."""
        if self._reading.get(key) is reading:
            del self._reading[key]
        if not reading.cancelled():
            reading.exception()
