"""The app instances behind the gateway: which are healthy, and whose turn it is."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Upstream:
    """One app instance, by its base URL (`http://app1:8000`); `healthy` is None until first checked."""

    url: str
    healthy: bool | None = None

    @property
    def websocket_url(self) -> str:
        return "ws" + self.url.removeprefix("http")  # http -> ws, https -> wss


def parse_upstreams(value: str) -> list[Upstream]:
    """Upstreams from a comma-separated list of base URLs; a clear `ValueError` for anything else."""
    urls = [item.strip().rstrip("/") for item in value.split(",") if item.strip()]
    if not urls:
        raise ValueError(
            "GATEWAY_UPSTREAMS is empty: list the app instances, e.g. http://app1:8000,http://app2:8000"
        )
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"GATEWAY_UPSTREAMS entry {url!r} is not a base URL like http://app1:8000")
    if len(set(urls)) != len(urls):
        raise ValueError(f"GATEWAY_UPSTREAMS lists an instance twice: {value!r}")
    return [Upstream(url) for url in urls]


class UpstreamPool:
    """Round-robin over the healthy upstreams, kept current by polling each one's health endpoint.

    A request that cannot connect marks its upstream down at once, so that the next ones go elsewhere
    without waiting for the next poll; the poll brings it back once it answers again.
    """

    def __init__(self, upstreams: Sequence[Upstream], *, health_path: str, health_timeout: float) -> None:
        if not upstreams:
            raise ValueError("the gateway needs at least one upstream")
        self.upstreams = tuple(upstreams)
        self.health_path = health_path
        self.health_timeout = health_timeout
        self._next = 0

    @property
    def healthy(self) -> list[Upstream]:
        return [upstream for upstream in self.upstreams if upstream.healthy]

    def choose(self) -> Upstream | None:
        """The next healthy upstream in turn, or None when none is healthy."""
        count = len(self.upstreams)
        for offset in range(count):
            index = (self._next + offset) % count
            if self.upstreams[index].healthy:
                self._next = (index + 1) % count
                return self.upstreams[index]
        return None

    def mark_down(self, upstream: Upstream, cause: str) -> None:
        self._record(upstream, healthy=False, cause=cause)

    async def check(self, client: httpx.AsyncClient) -> None:
        """Poll every upstream once, concurrently; each poll is bounded by `health_timeout`."""
        await asyncio.gather(*(self._check(client, upstream) for upstream in self.upstreams))

    async def watch(
        self, client: httpx.AsyncClient, interval: float, *, first_delay: float | None = None
    ) -> None:
        """Poll every `interval` seconds, the first time after `first_delay` (default: `interval`).

        Runs until cancelled. Workers of one gateway each start at a random `first_delay` so that their
        polls are spread over the interval rather than arriving together.
        """
        await asyncio.sleep(interval if first_delay is None else first_delay)
        while True:
            await self.check(client)
            await asyncio.sleep(interval)

    async def _check(self, client: httpx.AsyncClient, upstream: Upstream) -> None:
        try:
            response = await client.get(upstream.url + self.health_path, timeout=self.health_timeout)
        except httpx.HTTPError as error:
            self._record(upstream, healthy=False, cause=type(error).__name__)
            return
        self._record(upstream, healthy=response.status_code == 200, cause=f"HTTP {response.status_code}")

    @staticmethod
    def _record(upstream: Upstream, *, healthy: bool, cause: str) -> None:
        if upstream.healthy is healthy:
            return
        upstream.healthy = healthy
        if healthy:
            logger.info("upstream %s is healthy", upstream.url)
        else:
            logger.warning("upstream %s is down (%s): skipped until healthy again", upstream.url, cause)
