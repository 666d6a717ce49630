"""What the Redis and Redis Cluster brokers share: a command client whose every command is bounded in time
and fails as `BrokerUnavailable` or `BrokerError`, presence on it, and the health their readers report."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import ClassVar, Generic, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from ..exceptions import BrokerError, BrokerUnavailable
from .base import BrokerInterface, BrokerState, PresenceDelta
from .redis_presence import RedisPresence

__all__ = ["RedisCommands"]

Client = TypeVar("Client", Redis, RedisCluster)
Part = TypeVar("Part")


class RedisCommands(BrokerInterface, Generic[Client]):
    """The command side of a Redis broker; a subclass sets `_client` and `_presence` when it connects."""

    service: ClassVar[str]  # what the errors call the server
    unreachable: ClassVar[tuple[type[BaseException], ...]]  # failures that mean it cannot be reached

    def __init__(self, command_timeout: float) -> None:
        if command_timeout <= 0:
            raise ValueError("command_timeout must be positive")
        self.command_timeout = command_timeout
        self._client: Client | None = None
        self._presence: RedisPresence | None = None
        self._state = BrokerState.DISCONNECTED
        self._last_error: str | None = None
        self._reconnects = 0

    @property
    def state(self) -> BrokerState:
        return self._state

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def reconnects(self) -> int:
        return self._reconnects

    async def ping(self) -> None:
        async with self._bounded():
            await self._commands().ping()

    async def presence_update(
        self,
        key: str,
        *,
        add: Mapping[str, str] | None = None,
        remove: Mapping[str, str] | None = None,
        ttl: float,
    ) -> PresenceDelta:
        async with self._bounded():
            return await self._presence_sets().update(key, add or {}, remove or {}, ttl)

    async def presence_members(self, key: str) -> set[str]:
        async with self._bounded():
            return await self._presence_sets().members(key)

    @asynccontextmanager
    async def _bounded(self) -> AsyncIterator[None]:
        """Bound a command by `command_timeout` whatever redis-py does underneath (its retries included), and
        turn its failures into ours.

        A task cancelled during the command stays cancelled. On Python 3.11, `asyncio.wait_for` (which
        redis-py uses to send a command within its socket timeout) returns the result of a send that
        completed as the task was cancelled, and the cancellation is lost: a loop of commands stopped by
        `cancel()` would then run on. The cancellation, still counted by the task, is raised again here."""
        seconds = self.command_timeout
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        try:
            async with asyncio.timeout(seconds):
                yield
        except TimeoutError as error:
            raise BrokerUnavailable(f"{self.service} did not answer within {seconds}s") from error
        except self.unreachable as error:
            raise BrokerUnavailable(f"{self.service} cannot be reached: {error}") from error
        except RedisError as error:
            raise BrokerError(f"{self.service} failed: {error}") from error
        if task is not None and task.cancelling() > cancelling:
            raise asyncio.CancelledError

    def _commands(self) -> Client:
        return self._connected(self._client)

    def _presence_sets(self) -> RedisPresence:
        return self._connected(self._presence)

    def _connected(self, part: Part | None) -> Part:
        if part is None:
            raise RuntimeError(f"the {self.service} broker is not connected; call connect() first")
        return part

    def _record_failure(self, error: BaseException) -> None:
        self._state = BrokerState.RECONNECTING
        self._last_error = f"{type(error).__name__}: {error}"
