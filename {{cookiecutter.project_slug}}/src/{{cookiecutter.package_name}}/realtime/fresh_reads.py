"""Reads a caller can trust to be no older than its own call, shared by the callers asking at once.

A member joining or healing a group must see what was stored up to the moment it asked: a read begun
earlier may miss it. So each caller gets the result of a read begun after it asked. A key's reads run one
at a time, and everyone who asks while one is on its way shares the next: a connection storm into one room
costs a read per read's duration, not one (or two) per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["FreshReads"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FreshReads(Generic[K, V]):
    """The reads due and running, by key (see the module)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._due: dict[K, tuple[asyncio.Future[V], Callable[[], Awaitable[V]]]] = {}
        self._running: dict[K, asyncio.Task[None]] = {}

    async def read(self, key: K, read: Callable[[], Awaitable[V]]) -> V:
        """The result of the next read of `key` to begin: `read()`, or the one another caller asked for
        since the last began. A caller that gives up does not cancel it for the others."""
        due = self._due.get(key)
        if due is None:
            future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            self._due[key] = future, read
            if key not in self._running:
                task = asyncio.create_task(self._run(key), name=f"{self.name} {key}")
                if not task.done():  # an eager task may have finished already
                    self._running[key] = task
        else:
            future = due[0]
        return await asyncio.shield(future)

    async def wait(self) -> None:
        """Until the reads under way are done."""
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _run(self, key: K) -> None:
        """Run the due reads of `key` one after the other until none is due."""
        future: asyncio.Future[V] | None = None
        try:
            while (due := self._due.pop(key, None)) is not None:
                future, read = due
                try:
                    future.set_result(await read())
                except Exception as error:  # noqa: BLE001 - whatever it is, the callers waiting are told
                    future.set_exception(error)
        finally:
            self._running.pop(key, None)
            left = self._due.pop(key, None)
            for waiting in (future, left[0] if left is not None else None):
                if waiting is not None and not waiting.done():
                    waiting.cancel()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failed read as seen: its callers may all have given up, and it needs no report then."""
    if not future.cancelled():
        future.exception()
