"""Calls that take effect whether or not the caller awaits them.

The seed library documents several of its functions (`send`, `subscribe`, `set_conn_id`...) as plain
functions and others as coroutines, and its own examples await some of each. `start` runs the work as a
task begun at once (eagerly, on Python 3.12 and later, so that a call that needs no I/O is done before it
returns) and returns the task: awaiting it waits for the result and raises what the work raised; not
awaiting it still does the work, and a failure nobody awaited is logged, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["Call", "done", "start"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_eager_task_factory: Callable[..., asyncio.Task[Any]] | None = getattr(asyncio, "eager_task_factory", None)
"""Python 3.12's factory of tasks that run at once, in the caller's step, until they first wait; None on
3.11, where a task starts at the next turn of the loop."""

_running: set[asyncio.Task[Any]] = set()
"""Tasks started by `start` that have not finished: held so that they are not collected half-way."""


class Call(Awaitable[T]):
    """Work begun at once; awaiting it waits for its result. A failure is logged if nobody awaited it."""

    __slots__ = ("awaited", "task")

    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.awaited = False
        task.add_done_callback(self._finished)

    def __await__(self) -> Generator[Any, None, T]:
        self.awaited = True
        return self.task.__await__()

    def done(self) -> bool:
        return self.task.done()

    def _finished(self, task: asyncio.Task[T]) -> None:
        _running.discard(task)
        if task.cancelled() or self.awaited:
            return
        error = task.exception()
        if error is not None:
            logger.error("%s failed, and nobody awaited it", task.get_name(), exc_info=error)


def start(work: Coroutine[Any, Any, T]) -> Call[T]:
    """Begin `work` now, in a task that an awaiting caller waits for (see the module)."""
    loop = asyncio.get_running_loop()
    task: asyncio.Task[T]
    task = _eager_task_factory(loop, work) if _eager_task_factory is not None else loop.create_task(work)
    if not task.done():
        _running.add(task)
    return Call(task)


def done() -> Call[None]:
    """A call that had nothing to do, already complete."""
    return start(_nothing())


async def _nothing() -> None:
    return None
