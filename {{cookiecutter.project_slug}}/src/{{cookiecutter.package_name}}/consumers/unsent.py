"""Stored messages that could not be published: held by the instance, and published once the broker is back.

A chat message is stored, then published to its room. When the broker cannot be reached in between, the
message is in the history already, so it is not refused: the consumer echoes it to its sender and holds it
here, and `run()`, a task of the app's lifespan (`async with UnsentMessages(manager)`), publishes what is
held, oldest (smallest id) first, as soon as the manager is ready again. The clients of the room that stayed
connected then hear it live, the sender's other tabs included, on every instance subscribed again by then
(pub/sub keeps nothing for an instance that is not).

Nothing stored is lost when a held message is not published: if the instance dies first, or if more than
`limit` are held and the oldest are dropped (each logged, and counted in `dropped`), the messages are still
in the history, which clients read when they open the room, or resume with `since` below their ids.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from types import TracebackType
from typing import Self

from ..realtime import BrokerError, Frame, WebSocketManager

__all__ = ["UnsentMessages"]

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 10_000
READY_POLL_SECONDS = 0.05  # while messages are held, how often to look whether the broker is back
RETRY_SECONDS = 0.2  # after a publish failed although the broker looked back, doubled up to the maximum
MAX_RETRY_SECONDS = 5.0


class UnsentMessages:
    """Messages (an id, a group, the event to send it) waiting for the broker, at most `limit` of them."""

    def __init__(self, manager: WebSocketManager, *, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.manager = manager
        self.limit = limit
        self.dropped = 0
        self.published = 0
        self._held: list[tuple[int, int, str, Frame]] = []  # a heap: smallest id, then first held, first
        self._order = itertools.count()
        self._added = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._held)

    async def __aenter__(self) -> Self:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="unsent-messages")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._held:
            logger.warning("stopped with %d message(s) unpublished; they are in the history", len(self._held))

    def hold(self, group: str, message_id: int, event: Frame) -> None:
        """Keep a stored message to publish to `group` once the broker is back."""
        entry = (message_id, next(self._order), group, event)
        if len(self._held) < self.limit:
            heapq.heappush(self._held, entry)
        else:
            dropped_id, _, dropped_group, _ = heapq.heappushpop(self._held, entry)
            self.dropped += 1
            logger.warning(
                "%d messages held unpublished: dropped the oldest, %s to %r; it is in the history",
                self.limit,
                dropped_id,
                dropped_group,
            )
        self._added.set()

    async def run(self) -> None:
        """Publish what is held, oldest first, whenever the manager is ready; runs until cancelled."""
        delay = RETRY_SECONDS
        while True:
            if not self._held:
                self._added.clear()
                await self._added.wait()
                logger.info("holding messages until the broker is back")
                continue
            if not self.manager.ready:
                await asyncio.sleep(READY_POLL_SECONDS)
                continue
            message_id, _, group, event = heapq.heappop(self._held)
            try:
                await self.manager.group_send(group, event)
            except BrokerError as error:
                self.hold(group, message_id, event)
                logger.warning("could not publish held message %s yet: %s", message_id, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            except Exception:
                self.dropped += 1
                logger.exception(
                    "could not publish held message %s; dropped, it is in the history", message_id
                )
                continue
            delay = RETRY_SECONDS
            self.published += 1
            if not self._held:
                logger.info("published the held messages; %d since the start", self.published)
