"""Redis pub/sub (`redis://`, `rediss://`, `unix://`) on redis-py's asyncio client.

One connection carries every subscription and is read by one task that blocks on the socket: an idle
broker wakes up once per `health_check_interval` to send a PING, and a PING not answered within
`command_timeout` counts as a lost connection, so a Redis that stopped answering without closing anything (a
network partition, a stalled proxy) shows as `reconnecting` a few seconds later. When the connection is lost
the reader logs it, reports `reconnecting`, retries with exponential backoff (with jitter), and on success
subscribes again to every channel and pattern before reporting `connected`. Commands (PUBLISH, presence)
go through a separate client with its own pool, so they never wait behind the reader; while Redis cannot
be reached or does not answer within `command_timeout` they raise `BrokerUnavailable`, and `BrokerError` on
any other failure, after two quick retries that ride out the pooled connections a restarted Redis closed (a
command that timed out is not tried again: the bound holds). Publishes go out in the order they are
made, those made while a round trip is under way together in the next, as one pipeline (`Publishes`): a
publish waits at most for the round trip under way and its own. Presence is kept by Lua scripts (see
`redis_presence`), and needs Redis 7 or later.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..message import Message
from .base import BrokerMessage, BrokerState, encode_payload
from .redis_commands import RedisCommands
from .redis_presence import RedisPresence

__all__ = ["RedisBroker"]

logger = logging.getLogger(__name__)

_CONNECTION_ERRORS = (RedisError, OSError)


async def _close(pubsub: PubSub) -> None:
    """Close a pub/sub connection: redis-py annotates `PubSub.aclose` only from 8.2, so type it here."""
    aclose: Callable[[], Awaitable[None]] = pubsub.aclose
    await aclose()


_CONFIRMATIONS = {"subscribe": "SUBSCRIBE", "psubscribe": "PSUBSCRIBE"}
# A command that failed on a closed connection is tried again on a new one after 10 ms, then 20 ms.
_COMMAND_RETRY = Retry(ExponentialBackoff(cap=0.1, base=0.005), 2, supported_errors=(RedisConnectionError,))


class RedisBroker(RedisCommands[Redis]):
    """`options` go to `redis.asyncio.Redis.from_url` (e.g. `client_name`, `ssl_cert_reqs`).

    `command_timeout` bounds every command, and the wait for the answer to a health-check PING; it is also
    the sockets' connect and read timeout, unless `socket_timeout` or `socket_connect_timeout` say otherwise.
    """

    service = "Redis"
    publish_command = "PUBLISH"
    unreachable = (RedisConnectionError, RedisTimeoutError, OSError)

    def __init__(
        self,
        url: str,
        *,
        command_timeout: float = 3.0,
        health_check_interval: float = 1.0,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        subscribe_timeout: float = 5.0,
        **options: Any,
    ) -> None:
        if command_timeout <= 0 or health_check_interval <= 0:
            raise ValueError("command_timeout and health_check_interval must be positive")
        super().__init__(command_timeout)
        self.url = url
        self.health_check_interval = health_check_interval
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.subscribe_timeout = subscribe_timeout
        self._options = {
            "socket_timeout": command_timeout,
            "socket_connect_timeout": command_timeout,
            **options,
            "decode_responses": False,
        }
        self._listener_client: Redis | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[BrokerMessage] = asyncio.Queue()
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._waiters: dict[tuple[str, str], deque[asyncio.Future[None]]] = {}
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        if self._reader is not None:
            return
        self._client = Redis.from_url(self.url, **{"retry": _COMMAND_RETRY, **self._options})
        self._presence = RedisPresence(self._client)
        # The reader owns reconnection; redis-py retrying underneath would hide the loss from it.
        self._listener_client = Redis.from_url(self.url, **{**self._options, "retry": Retry(NoBackoff(), 0)})
        self._state = BrokerState.RECONNECTING
        try:
            await self._open()
        except _CONNECTION_ERRORS as error:
            self._record_failure(error)
            logger.warning("Redis pub/sub is unreachable (%s); retrying in the background", self._last_error)
        self._reader = asyncio.create_task(self._read_forever(), name="redis-pubsub-reader")

    async def disconnect(self) -> None:
        await self._publishes.aclose()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await self._close_pubsub()
        for client in (self._client, self._listener_client):
            if client is not None:
                await client.aclose()
        self._client = self._listener_client = None
        self._presence = None
        self._channels.clear()
        self._patterns.clear()
        self._state = BrokerState.DISCONNECTED

    async def subscribe(self, *channels: str) -> None:
        await self._change("subscribe", self._channels, channels)

    async def unsubscribe(self, *channels: str) -> None:
        await self._change("unsubscribe", self._channels, channels)

    async def psubscribe(self, *patterns: str) -> None:
        await self._change("psubscribe", self._patterns, patterns)

    async def punsubscribe(self, *patterns: str) -> None:
        await self._change("punsubscribe", self._patterns, patterns)

    async def publish(self, channel: str, data: bytes | str | Message | Mapping[str, Any]) -> None:
        """Publish `data` (a `Message` or a dict is sent as its JSON) to `channel`, after the publishes made
        before it, and with those made meanwhile (see `Publishes`)."""
        await self._publishes.publish([(channel, encode_payload(data))])

    async def get_message(self) -> BrokerMessage:
        return await self._queue.get()

    async def _change(self, action: str, registry: set[str], names: tuple[str, ...]) -> None:
        adding = action in _CONFIRMATIONS
        waiters: list[asyncio.Future[None]] = []
        async with self._lock:
            changed = [name for name in dict.fromkeys(names) if (name in registry) != adding]
            if adding:
                registry.update(changed)
            else:
                registry.difference_update(changed)
            if not changed or self._pubsub is None:
                return
            if adding:
                waiters = [self._expect_confirmation(action, name) for name in changed]
            try:
                await self._pubsub.execute_command(action.upper(), *changed)
            except _CONNECTION_ERRORS:
                self._release_waiters()
                return
        if waiters:
            try:
                async with asyncio.timeout(self.subscribe_timeout):
                    await asyncio.gather(*waiters)
            except TimeoutError:
                logger.warning("Redis did not confirm %s of %d name(s) in time", action, len(changed))

    def _expect_confirmation(self, action: str, name: str) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault((action, name), deque()).append(waiter)
        return waiter

    def _confirm(self, action: str, name: str) -> None:
        waiters = self._waiters.get((action, name))
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        if not waiters:
            self._waiters.pop((action, name), None)

    def _release_waiters(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._waiters.clear()

    async def _open(self) -> None:
        assert self._listener_client is not None
        pubsub = self._listener_client.pubsub()
        try:
            await pubsub.ping()
            reply = await pubsub.get_message(timeout=self.command_timeout)
            if reply is None or reply["type"] != "pong":
                raise RedisTimeoutError(f"no answer to PING within {self.command_timeout}s")
            async with self._lock:
                if self._channels:
                    await pubsub.execute_command("SUBSCRIBE", *self._channels)
                if self._patterns:
                    await pubsub.execute_command("PSUBSCRIBE", *self._patterns)
                self._pubsub = pubsub
                self._state = BrokerState.CONNECTED
        except BaseException:
            await _close(pubsub)
            raise

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._release_waiters()
        if pubsub is not None:
            await _close(pubsub)

    async def _read_forever(self) -> None:
        delay = self.reconnect_delay
        while True:
            if self._pubsub is None:
                try:
                    await self._open()
                except _CONNECTION_ERRORS as error:
                    self._record_failure(error)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # with jitter
                    delay = min(delay * 2, self.max_reconnect_delay)
                    continue
                self._reconnects += 1
                logger.info(
                    "Redis pub/sub reconnected; %d channel(s) and %d pattern(s) subscribed again",
                    len(self._channels),
                    len(self._patterns),
                )
            delay = self.reconnect_delay
            try:
                await self._read(self._pubsub)
            except _CONNECTION_ERRORS as error:
                self._record_failure(error)
                logger.warning("Redis pub/sub connection lost (%s); reconnecting", self._last_error)
            except Exception as error:  # the reader must outlive any surprise, so it is logged and goes on
                self._record_failure(error)
                logger.exception("Redis pub/sub reader failed; reconnecting")
            await self._close_pubsub()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _read(self, pubsub: PubSub | None) -> None:
        assert pubsub is not None
        awaiting_pong = False
        while True:
            wait = self.command_timeout if awaiting_pong else self.health_check_interval
            raw = await pubsub.get_message(timeout=wait)
            if raw is None:
                if awaiting_pong:
                    raise RedisTimeoutError(f"no answer to PING within {self.command_timeout}s")
                await pubsub.ping()
                awaiting_pong = True
                continue
            awaiting_pong = False
            kind = raw["type"]
            if kind in ("message", "pmessage"):
                pattern = raw["pattern"].decode() if raw["pattern"] is not None else None
                self._queue.put_nowait(BrokerMessage(raw["channel"].decode(), raw["data"], pattern))
            elif kind in _CONFIRMATIONS:
                self._confirm(kind, raw["channel"].decode())
