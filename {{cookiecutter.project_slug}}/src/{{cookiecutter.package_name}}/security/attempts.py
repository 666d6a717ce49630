"""How often a client address, or a username, may try to log in or register: counted in fixed windows.

Each attempt counts once per key (`address:<ip>`, `username:<name>`) in the current window of
`AUTH_RATE_WINDOW_SECONDS`; over the limit, the attempt is refused and told when the window ends. With a Redis
broker the counters live in Redis (one `INCR` and `EXPIRE` per key), so every instance counts together; with
the memory broker they live in the process. While Redis cannot be reached attempts are let through and a
warning is logged: logging in must not depend on a counter.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
REDIS_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Refusal:
    """An attempt over a limit: which one, and in how many seconds the window ends."""

    key: str
    retry_after: int


class AttemptCounter:
    """Counts attempts per key in fixed windows, in Redis when given a client, else in this process."""

    def __init__(self, *, window: float, prefix: str, redis: Redis | None = None) -> None:
        self.window = window
        self.prefix = prefix
        self.redis = redis
        self._local: dict[str, int] = {}
        self._local_window = -1

    @classmethod
    def for_broker(cls, broker_url: str, *, window: float, prefix: str) -> AttemptCounter:
        redis = None
        if broker_url.startswith(REDIS_SCHEMES):
            redis = Redis.from_url(
                broker_url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
            )
        return cls(window=window, prefix=prefix, redis=redis)

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    async def hit(self, limits: dict[str, int]) -> Refusal | None:
        """Count one attempt under each key of `limits` (key -> most attempts a window); the first refusal."""
        now = time.time()
        window = int(now // self.window)
        retry_after = max(1, math.ceil((window + 1) * self.window - now))
        counts = await self._increment(window, list(limits))
        for (key, limit), count in zip(limits.items(), counts, strict=True):
            if count > limit:
                return Refusal(key, retry_after)
        return None

    async def _increment(self, window: int, keys: list[str]) -> list[int]:
        if self.redis is None:
            if window != self._local_window:
                self._local, self._local_window = {}, window
            for key in keys:
                self._local[key] = self._local.get(key, 0) + 1
            return [self._local[key] for key in keys]
        names = [f"{self.prefix}:attempts:{window}:{key}" for key in keys]
        try:
            async with self.redis.pipeline(transaction=False) as pipeline:
                for name in names:
                    pipeline.incr(name)
                    pipeline.expire(name, math.ceil(self.window) + 1)
                results = await pipeline.execute()
        except (RedisError, OSError) as error:
            logger.warning("attempts not counted, Redis failed: %r", error)
            return [0 for _ in keys]
        return [int(count) for count in results[::2]]
