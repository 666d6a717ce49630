"""Reads of one key each that go to the database together: the keys asked for while a read is on its way
are read in the next, in one query.

A connection storm asks for hundreds of accounts at once, each by its own key: one query a key costs a
pooled connection, a round trip and a transaction for every one of them. Batched, a storm costs a query per
read's duration, whatever the number of keys (up to `most` a query). Unlike `SharedReads`, a caller shares
a read in flight only when told it may (`join`): otherwise it gets one begun after it asked.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["BatchedReads"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BatchedReads(Generic[K, V]):
    """The keys due and being read (see the module); `read_many(keys)` gives a value for each key."""

    def __init__(
        self, name: str, read_many: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]], *, most: int = 500
    ) -> None:
        self.name = name
        self.read_many = read_many
        self.most = most
        self._due: dict[K, asyncio.Future[V]] = {}
        self._reading: dict[K, asyncio.Future[V]] = {}
        self._task: asyncio.Task[None] | None = None

    async def read(self, key: K, *, join: bool = True) -> V:
        """The value of `key`: from the read of it on its way if `join`, else from the next one, which
        begins once the read on its way is done. A caller that gives up does not cancel it for the others."""
        future = (self._reading.get(key) if join else None) or self._due.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            self._due[key] = future
            if self._task is None:
                task = asyncio.create_task(self._run(), name=self.name)
                if not task.done():  # an eager task may have finished already
                    self._task = task
        return await asyncio.shield(future)

    def forget(self, stale: Callable[[K], bool]) -> None:
        """Let no caller join the reads on their way of the keys `stale` names: they began too early."""
        for key in [key for key in self._reading if stale(key)]:
            del self._reading[key]

    async def _run(self) -> None:
        """Read the keys due, `most` at a time, until none is."""
        batch: dict[K, asyncio.Future[V]] = {}
        try:
            while self._due:
                batch = dict(itertools.islice(self._due.items(), self.most))
                for key in batch:
                    del self._due[key]
                self._reading.update(batch)
                try:
                    values = await self.read_many(list(batch))
                    results = [(future, values[key]) for key, future in batch.items()]
                except Exception as error:  # noqa: BLE001 - whatever it is, the callers waiting are told
                    for future in batch.values():
                        future.set_exception(error)
                else:
                    for future, value in results:
                        future.set_result(value)
                finally:
                    for key, future in batch.items():
                        if self._reading.get(key) is future:
                            del self._reading[key]
        finally:
            self._task = None
            for future in itertools.chain(batch.values(), self._due.values()):
                if not future.done():
                    future.cancel()
            self._due.clear()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failed read as seen: its callers may all have given up, and it needs no report then."""
    if not future.cancelled():
        future.exception()
