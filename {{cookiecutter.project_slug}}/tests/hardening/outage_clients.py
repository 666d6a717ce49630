"""The clients of the Redis restart test: room connections that keep what they received, talkers, probes of
`/readyz`, the stored messages, and clients that reconnect with `since`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..processes import ServerProcess
from .support import sign_in

TALK_INTERVAL = 0.4  # under the default rate limit of 10 frames a second
DELIVERY_TIMEOUT = 15.0
SETTLE_SECONDS = 1.0
REPLAY_CONCURRENCY = 25
REJOIN_ATTEMPTS = 3
PROBE_INTERVAL = 0.1


@dataclass
class RoomClient:
    """One user's connection to a room on one instance, and what it received."""

    user: str
    room: str
    instance: str
    url: str
    websocket: ClientConnection
    ids: list[int] = field(default_factory=list)
    received_at: dict[int, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    last_before_outage: int = 0

    async def read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.websocket:
                frame = json.loads(raw)
                if frame["type"] == "chat.message":
                    self.ids.append(frame["seq"])
                    self.received_at.setdefault(frame["seq"], time.monotonic())
                elif frame["type"] == "error":
                    self.errors.append(frame["code"])


@dataclass
class Said:
    """The chat messages sent, by text, with the time each was sent."""

    at: dict[str, float] = field(default_factory=dict)

    def between(self, start: float, end: float) -> set[str]:
        return {text for text, sent_at in self.at.items() if start <= sent_at < end}


@dataclass(frozen=True)
class Readiness:
    """One answer of `/readyz`: when, from which instance, its status, and its checks."""

    at: float
    instance: str
    status: int
    checks: dict[str, str]


@dataclass
class Probe:
    """`/readyz` of each instance over time."""

    results: list[Readiness] = field(default_factory=list)

    def answers(self, instance: str, start: float, end: float) -> list[Readiness]:
        return [found for found in self.results if found.instance == instance and start <= found.at <= end]

    def statuses(self, instance: str, start: float, end: float) -> set[int]:
        return {found.status for found in self.answers(instance, start, end)}

    def first(self, instance: str, status: int, after: float) -> float:
        return min(
            found.at for found in self.answers(instance, after, float("inf")) if found.status == status
        )


def sign_in_all(base_url: str, users: list[str]) -> dict[str, str]:
    """Register and sign in `users` from a few threads; their tokens."""

    def sign_in_one(user: str) -> str:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            return sign_in(http, user)

    with ThreadPoolExecutor(8) as pool:
        return dict(zip(users, pool.map(sign_in_one, users), strict=True))


@asynccontextmanager
async def probing(instances: list[ServerProcess], probe: Probe) -> AsyncIterator[None]:
    async def probe_forever() -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                for instance in instances:
                    with contextlib.suppress(httpx.TransportError):
                        response = await http.get(instance.base_url + "/readyz")
                        checks = response.json()["checks"]
                        probe.results.append(
                            Readiness(time.monotonic(), instance.name, response.status_code, checks)
                        )
                await asyncio.sleep(PROBE_INTERVAL)

    task = asyncio.create_task(probe_forever())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def talk(talkers: list[RoomClient], said: Said, seconds: float) -> None:
    """Each talker says a numbered line every `TALK_INTERVAL` for `seconds`."""

    async def keep_talking(talker: RoomClient) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            text = f"{talker.user}@{talker.instance}#{len(said.at)}"
            said.at[text] = time.monotonic()
            with contextlib.suppress(ConnectionClosed):
                await talker.websocket.send(json.dumps({"type": "chat.message", "text": text}))
            await asyncio.sleep(TALK_INTERVAL)

    await asyncio.gather(*(keep_talking(talker) for talker in talkers))


async def stored(database_url: str, rooms: list[str]) -> dict[str, dict[int, str]]:
    """Each room's stored messages, text by seq."""
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        rows = await connection.fetch(
            "SELECT r.name, m.seq, m.text FROM messages m JOIN rooms r ON r.id = m.room_id "
            "WHERE r.name = ANY($1)",
            rooms,
        )
    finally:
        await connection.close()
    by_room: dict[str, dict[int, str]] = {room: {} for room in rooms}
    for row in rows:
        by_room[row["name"]][row["seq"]] = row["text"]
    return by_room


@dataclass
class Rejoin:
    """Clients reconnecting with `since`, a few at a time, trying again when closed early (as the browser
    client does); how many times they had to."""

    arrivals: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(REPLAY_CONCURRENCY))
    closed_early: Counter[int | None] = field(default_factory=Counter)

    async def replay(self, url: str, token: str, since: int) -> list[int]:
        """The seqs replayed, which come before the presence that follows the replay."""
        headers = {"Authorization": f"Bearer {token}"}
        async with self.arrivals:
            for _ in range(REJOIN_ATTEMPTS):
                ids: list[int] = []
                async with connect(f"{url}?since={since}", additional_headers=headers) as websocket:
                    try:
                        async with asyncio.timeout(DELIVERY_TIMEOUT):
                            while (frame := json.loads(await websocket.recv()))["type"] != "presence.state":
                                if frame["type"] == "chat.message":
                                    ids.append(frame["seq"])
                    except ConnectionClosed:
                        self.closed_early[websocket.close_code] += 1
                        continue
                return ids
        raise AssertionError(
            f"closed {REJOIN_ATTEMPTS} times before the replay was over: {self.closed_early}"
        )


async def both_ready(probe: Probe, instances: list[ServerProcess], since: float) -> bool:
    return all(probe.statuses(instance.name, since, time.monotonic()) & {200} for instance in instances)


def sender_instance(text: str) -> str:
    """The instance a line of `talk()` was said on."""
    return text.partition("@")[2].partition("#")[0]


def said_in(messages: dict[int, str], texts: set[str]) -> set[int]:
    """The ids of the stored `messages` whose text is one of `texts`."""
    return {message_id for message_id, text in messages.items() if text in texts}


def heard_in(clients: list[RoomClient], room: str) -> set[int]:
    """The ids that reached at least one client of `room`."""
    return {message_id for client in clients if client.room == room for message_id in client.ids}


async def settled(clients: list[RoomClient]) -> None:
    """Return once no client has received anything for `SETTLE_SECONDS`."""
    received = sum(len(client.ids) for client in clients)
    async with asyncio.timeout(DELIVERY_TIMEOUT):
        while True:
            await asyncio.sleep(SETTLE_SECONDS)
            if received == (received := sum(len(client.ids) for client in clients)):
                return
