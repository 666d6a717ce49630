"""What the Redis and Redis Cluster brokers share: a command client whose every command is bounded in time
and fails as `BrokerUnavailable` or `BrokerError`, publishes sent in order and together, presence on the
client, and the health their readers report."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import ClassVar, Generic, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from ..exceptions import BrokerError, BrokerUnavailable
from .base import BrokerInterface, BrokerState, PresenceDelta
from .redis_presence import RedisPresence

__all__ = ["Publishes", "RedisCommands"]

Client = TypeVar("Client", Redis, RedisCluster)
Part = TypeVar("Part")

# Channels and their messages, published in this order.
Publish = tuple[str, bytes]
# The most a round trip carries: a burst larger than this takes several, one after the other.
MAX_PUBLISHES_TOGETHER = 1000


class Publishes:
    """Publishes sent in the order they are made: those made while a round trip is under way go together in
    the next one, so a room's messages stored together, published one after another, reach every
    instance in one read, not a round trip apart (and Redis answers them in one reply). Each caller waits
    for the round trip that carries its publish, and gets its error; a caller cancelled meanwhile does not
    take its publish back."""

    def __init__(self, broker: RedisCommands[Redis] | RedisCommands[RedisCluster]) -> None:
        self._broker = broker
        self._waiting: list[tuple[Sequence[Publish], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def publish(self, publishes: Sequence[Publish]) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((publishes, future))
        if self._task is None:
            # Its own context: the task outlives the publish that started it, and carries no caller's state.
            self._task = asyncio.create_task(
                self._send_waiting(), name="redis-publishes", context=contextvars.Context()
            )
        await future

    async def aclose(self) -> None:
        """Stop sending: what is not sent yet fails with `BrokerUnavailable`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        unsent, self._waiting = self._waiting, []
        _settle(unsent, self._closed())

    async def _send_waiting(self) -> None:
        batch: list[tuple[Sequence[Publish], asyncio.Future[None]]] = []
        try:
            while self._waiting:
                batch = self._waiting[:MAX_PUBLISHES_TOGETHER]
                del self._waiting[:MAX_PUBLISHES_TOGETHER]
                error: Exception | None = None
                try:
                    await self._broker.send_publishes([item for publishes, _ in batch for item in publishes])
                except Exception as failure:  # noqa: BLE001 - each caller gets the error its publish met
                    error = failure
                _settle(batch, error)
                batch = []
        finally:
            if self._task is asyncio.current_task():
                self._task = None
            _settle(batch, self._closed())

    def _closed(self) -> BrokerUnavailable:
        return BrokerUnavailable(f"the {self._broker.service} broker was disconnected")


def _settle(batch: list[tuple[Sequence[Publish], asyncio.Future[None]]], error: Exception | None) -> None:
    """Tell each caller of `batch` how its publish went; a caller that was cancelled is not waiting.

    Each caller raises an error of its own (with the same cause), so that no traceback grows with the
    callers that raised it before."""
    for _, future in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        elif isinstance(error, BrokerError):
            own = type(error)(*error.args)
            own.__cause__ = error.__cause__
            future.set_exception(own)
        else:
            future.set_exception(error)


class RedisCommands(BrokerInterface, Generic[Client]):
    """The command side of a Redis broker; a subclass sets `_client` and `_presence` when it connects."""

    service: ClassVar[str]  # what the errors call the server
    publish_command: ClassVar[str]  # PUBLISH, or a cluster's sharded SPUBLISH
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
        self._publishes = Publishes(self)

    @property
    def state(self) -> BrokerState:
        return self._state

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def reconnects(self) -> int:
        return self._reconnects

    async def send_publishes(self, publishes: Sequence[Publish]) -> None:
        """Publish each message on its channel, in order, in one round trip: one alone as a plain command,
        more as a pipeline (a cluster's sends each primary its part in order, and the parts at once)."""
        client = self._commands()
        async with self._bounded():
            if len(publishes) == 1:
                await client.execute_command(self.publish_command, *publishes[0])  # type: ignore[no-untyped-call]
                return
            async with client.pipeline(transaction=False) as pipeline:
                for channel, data in publishes:
                    pipeline.execute_command(self.publish_command, channel, data)
                await pipeline.execute()

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
