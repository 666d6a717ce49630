"""Clients of the deployed stack: chat room connections that keep what they saw, a steady talker, and a
prober of an HTTP endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

TokenPlace = Literal["header", "query", "subprotocol"]
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
PROBE_TIMEOUT = 10.0


class RoomClient:
    """A user's WebSocket to a chat room, read by a task that keeps what the frames tell: the chat messages
    in order of arrival, and who is present."""

    def __init__(self, user: str, websocket: ClientConnection) -> None:
        self.user = user
        self.websocket = websocket
        self.instance = websocket.response.headers.get("x-instance") if websocket.response else None
        self.messages: list[dict[str, Any]] = []
        self.present: set[str] | None = None  # known from the first `presence.state`, sent on arrival
        self._reader = asyncio.create_task(self._read(), name=f"room-client:{user}")

    @classmethod
    async def open(
        cls, url: str, user: str, token: str, *, place: TokenPlace, since: int | None = None
    ) -> RoomClient:
        """Connect to `url` (`ws://<host>/ws/rooms/<room>`) with `token` where a client may put it."""
        query: dict[str, str | int] = {} if since is None else {"since": since}
        headers: dict[str, str] = {}
        subprotocols: list[Subprotocol] | None = None
        if place == "header":
            headers["Authorization"] = f"Bearer {token}"
        elif place == "query":
            query["token"] = token
        else:
            subprotocols = [Subprotocol("bearer"), Subprotocol(token)]
        if query:
            url = f"{url}?{urlencode(query)}"
        websocket = await connect(
            url,
            additional_headers=headers,
            subprotocols=subprotocols,
            open_timeout=OPEN_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
        )
        return cls(user, websocket)

    @property
    def ids(self) -> list[int]:
        """The seqs of the chat messages received, in order (`since` takes one)."""
        return [message["seq"] for message in self.messages]

    def texts_from(self, user: str) -> list[str]:
        return [message["text"] for message in self.messages if message["user"] == user]

    async def say(self, text: str) -> None:
        await self.websocket.send(json.dumps({"type": "chat.message", "text": text}))

    async def ended(self, within: float) -> float:
        """When (monotonic) the server closed the connection, once it has; `websocket.close_code` says how."""
        async with asyncio.timeout(within):
            return await asyncio.shield(self._reader)

    async def close(self) -> None:
        await self.websocket.close()
        await self._reader

    async def _read(self) -> float:
        with contextlib.suppress(ConnectionClosed):  # closed with an error code, or with no close frame
            async for frame in self.websocket:
                self._take(json.loads(frame))
        return time.monotonic()

    def _take(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "chat.message":
            self.messages.append(frame)
        elif kind == "presence.state":
            self.present = set(frame["users"])
        elif kind == "presence.join" and self.present is not None:
            self.present.add(frame["user"])
        elif kind == "presence.leave" and self.present is not None:
            self.present.discard(frame["user"])
        elif kind == "presence.diff" and self.present is not None:
            self.present.update(frame["joins"])
            self.present.difference_update(frame["leaves"])


async def keep_saying(
    client: RoomClient, prefix: str, said: list[str], stop: asyncio.Event, interval: float
) -> None:
    """Say `<prefix> 0`, `<prefix> 1`... every `interval` seconds until `stop` is set; each goes in `said`."""
    while not stop.is_set():
        text = f"{prefix} {len(said)}"
        await client.say(text)
        said.append(text)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


@dataclass(frozen=True)
class Probe:
    """One request of a prober: when it started, and the status and instance of the answer."""

    started_at: float
    status: int | None  # None: no HTTP answer at all, `error` says what happened instead
    instance: str | None = None
    error: str | None = None


@asynccontextmanager
async def probing(base_url: str, path: str, interval: float) -> AsyncIterator[list[Probe]]:
    """GET `path` one request at a time, every `interval` seconds, for as long as the block lasts."""
    probes: list[Probe] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=PROBE_TIMEOUT) as client:

        async def probe_until_cancelled() -> None:
            while True:
                started_at = time.monotonic()
                try:
                    response = await client.get(path)
                except httpx.TransportError as error:
                    probes.append(Probe(started_at, None, error=type(error).__name__))
                else:
                    probes.append(Probe(started_at, response.status_code, response.headers.get("x-instance")))
                await asyncio.sleep(interval)

        prober = asyncio.create_task(probe_until_cancelled(), name=f"probe:{path}")
        try:
            yield probes
        finally:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober


def describe(probes: list[Probe]) -> str:
    """How the requests of `probes` ended: their statuses, or their errors when there was no answer."""
    outcomes = Counter(str(probe.status or probe.error) for probe in probes)
    return ", ".join(f"{count} x {outcome}" for outcome, count in sorted(outcomes.items())) or "none"
