"""Redis restarted under two instances while 200 clients chat, on PostgreSQL and a Redis of the test's own.

100 users, each connected to both instances, in four rooms; two users of each room say something every
`TALK_INTERVAL` seconds from each instance, before, during and after the outage. Redis is stopped for
`OUTAGE_SECONDS`, then started again, empty. Meanwhile:

- `/readyz` of each instance answers 503, naming the broker, for as long as Redis is down, and 200 again
  once its listener has reconnected and subscribed again, by itself: no instance is restarted;
- what is said once both are ready again reaches, live, every client of the room on both instances or
  none (a message stored but whose publishing failed is counted, and must come with the replay);
- every client then reconnects with `since=<the last id it saw before the outage>` and is replayed exactly
  the room's stored messages after that id, each once; with what it heard live, that is every message of
  the room, but for any stored as the outage began whose publishing failed while a later one had already
  been delivered: its id is below the client's resume point, so no replay brings it. Those are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.support import create_tables
from app.ws_support import instance_env, start_instances
from processes import ProcessGroup, ServerProcess, wait_until

from .faults import PrivateRedis
from .support import sign_in

pytestmark = pytest.mark.slow

USERS = 100
ROOMS = 4
TALKERS_PER_ROOM = 2
TALK_INTERVAL = 0.4  # under the default rate limit of 10 frames a second
TALK_SECONDS = 3.0  # before the outage, and again once both instances are ready
OUTAGE_SECONDS = 3.0
RECOVERY_TIMEOUT = 15.0  # the listener retries with a backoff of at most 5 s
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
    errors: list[str] = field(default_factory=list)
    last_before_outage: int = 0

    async def read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.websocket:
                frame = json.loads(raw)
                if frame["type"] == "chat.message":
                    self.ids.append(frame["id"])
                elif frame["type"] == "error":
                    self.errors.append(frame["code"])


@dataclass
class Said:
    """The chat messages sent, by text, with the time each was sent."""

    at: dict[str, float] = field(default_factory=dict)

    def between(self, start: float, end: float) -> set[str]:
        return {text for text, sent_at in self.at.items() if start <= sent_at < end}


@dataclass
class Probe:
    """`/readyz` of each instance over time: (time, instance, status)."""

    results: list[tuple[float, str, int]] = field(default_factory=list)

    def statuses(self, instance: str, start: float, end: float) -> set[int]:
        return {status for at, name, status in self.results if name == instance and start <= at <= end}

    def first(self, instance: str, status: int, after: float) -> float:
        return min(
            at for at, name, found in self.results if name == instance and found == status and at > after
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
                        status = (await http.get(instance.base_url + "/readyz")).status_code
                        probe.results.append((time.monotonic(), instance.name, status))
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
    """Each room's stored messages, text by id."""
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        rows = await connection.fetch(
            "SELECT r.name, m.id, m.text FROM messages m JOIN rooms r ON r.id = m.room_id "
            "WHERE r.name = ANY($1)",
            rooms,
        )
    finally:
        await connection.close()
    by_room: dict[str, dict[int, str]] = {room: {} for room in rooms}
    for row in rows:
        by_room[row["name"]][row["id"]] = row["text"]
    return by_room


@dataclass
class Rejoin:
    """Clients reconnecting with `since`, a few at a time, trying again when closed early (as the browser
    client does); how many times they had to."""

    arrivals: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(REPLAY_CONCURRENCY))
    closed_early: Counter[int | None] = field(default_factory=Counter)

    async def replay(self, url: str, token: str, since: int) -> list[int]:
        """The ids replayed, which come before the presence that follows the replay."""
        headers = {"Authorization": f"Bearer {token}"}
        async with self.arrivals:
            for _ in range(REJOIN_ATTEMPTS):
                ids: list[int] = []
                async with connect(f"{url}?since={since}", additional_headers=headers) as websocket:
                    try:
                        async with asyncio.timeout(DELIVERY_TIMEOUT):
                            while (frame := json.loads(await websocket.recv()))["type"] != "presence.state":
                                if frame["type"] == "chat.message":
                                    ids.append(frame["id"])
                    except ConnectionClosed:
                        self.closed_early[websocket.close_code] += 1
                        continue
                return ids
        raise AssertionError(
            f"closed {REJOIN_ATTEMPTS} times before the replay was over: {self.closed_early}"
        )


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis server of this test's own; skipped without `redis-server`, unless `REQUIRE_SERVICES=1`."""
    try:
        server = PrivateRedis(tmp_path)
    except FileNotFoundError as error:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"{error} (REQUIRE_SERVICES=1)")
        pytest.skip(str(error))
    with server:
        yield server


async def test_instances_ride_out_a_redis_restart_and_no_stored_message_is_lost(
    postgres_database_url: str, broker_channel: str, redis_server: PrivateRedis, process_group: ProcessGroup
) -> None:
    await create_tables(postgres_database_url)
    env = instance_env(postgres_database_url, redis_server.url, broker_channel)
    instances = await asyncio.to_thread(start_instances, process_group, env)
    rooms = [f"{broker_channel}-{number}" for number in range(ROOMS)]
    users = [f"u{number:03}-{broker_channel[-6:]}" for number in range(USERS)]
    tokens = await asyncio.to_thread(sign_in_all, instances[0].base_url, users)
    async with httpx.AsyncClient(base_url=instances[0].base_url, timeout=10) as http:
        for room in rooms:
            response = await http.post(
                "/rooms",
                json={"name": room, "title": room},
                headers={"Authorization": f"Bearer {tokens[users[0]]}"},
            )
            assert response.status_code == 201, response.text

    clients: list[RoomClient] = []
    said, probe = Said(), Probe()
    async with AsyncExitStack() as stack:
        for number, user in enumerate(users):
            room = rooms[number % ROOMS]
            for instance in instances:
                url = f"{instance.ws_url}/ws/rooms/{room}"
                websocket = await stack.enter_async_context(
                    connect(
                        url,
                        additional_headers={"Authorization": f"Bearer {tokens[user]}"},
                        open_timeout=30,
                        max_queue=None,
                    )
                )
                clients.append(RoomClient(user, room, instance.name, url, websocket))
        readers = [asyncio.create_task(client.read()) for client in clients]
        talkers = [client for client in clients if users.index(client.user) < ROOMS * TALKERS_PER_ROOM]
        await stack.enter_async_context(probing(instances, probe))

        await talk(talkers, said, TALK_SECONDS)
        for client in clients:
            client.last_before_outage = max(client.ids, default=0)
        redis_server.stop()
        stopped_at = time.monotonic()
        await talk(talkers, said, OUTAGE_SECONDS)
        redis_server.start()
        started_at = time.monotonic()
        await wait_until(lambda: both_ready(probe, instances, started_at), within=RECOVERY_TIMEOUT)
        ready_at = time.monotonic()
        await talk(talkers, said, TALK_SECONDS)
        talked_until = time.monotonic()

        await settled(clients)
        messages = await stored(postgres_database_url, rooms)
        after_recovery = said.between(ready_at, talked_until)
        heard_after = {
            room: said_in(found, after_recovery) & heard_in(clients, room) for room, found in messages.items()
        }
        missed = {
            (client.user, client.instance): sorted(heard_after[client.room] - set(client.ids))
            for client in clients
            if not heard_after[client.room] <= set(client.ids)
        }
        assert not missed, missed
        assert all(heard_after.values()), "nothing said after the recovery reached a room"
        for reader in readers:
            reader.cancel()

    for instance in instances:
        assert instance.running
        assert probe.statuses(instance.name, stopped_at + 1.0, started_at) == {503}
    rejoin = Rejoin()
    replayed = await asyncio.gather(
        *(rejoin.replay(client.url, tokens[client.user], client.last_before_outage) for client in clients)
    )
    behind_resume_point: set[int] = set()
    for client, replayed_ids in zip(clients, replayed, strict=True):
        stored_ids = set(messages[client.room])
        assert len(set(client.ids)) == len(client.ids), client.user
        after_resume_point = {
            message_id for message_id in stored_ids if message_id > client.last_before_outage
        }
        assert replayed_ids == sorted(after_resume_point), client.user
        missing = stored_ids - set(client.ids) - set(replayed_ids)
        assert max(missing, default=0) < client.last_before_outage, (client.user, client.instance, missing)
        behind_resume_point |= missing

    outage = said.between(stopped_at, started_at)
    stored_texts = {text for found in messages.values() for text in found.values()}
    unheard_after = sum(
        len(said_in(found, after_recovery) - heard_after[room]) for room, found in messages.items()
    )
    errors = Counter(code for client in talkers for code in client.errors)
    print(f"\nRedis restart under {len(clients)} clients on {len(instances)} instances:")
    print(f"  {len(said.at)} messages sent, {len(stored_texts)} stored, refused: {dict(errors)}")
    print(f"  during the outage {len(outage)} sent, {len(outage & stored_texts)} stored")
    print(f"  after recovery {len(after_recovery)} sent, {unheard_after} stored but not published")
    print(
        f"  {sum(len(client.ids) for client in clients)} delivered live, {sum(map(len, replayed))} replayed"
    )
    print(
        f"  {len(behind_resume_point)} stored as the outage began, unpublished, below clients' resume point"
    )
    print(f"  reconnections closed before their replay was over, by code: {dict(rejoin.closed_early)}")
    for instance in instances:
        unready = probe.first(instance.name, 503, stopped_at) - stopped_at
        ready = probe.first(instance.name, 200, started_at) - started_at
        print(
            f"  {instance.name}: /readyz 503 {unready:.2f}s after the stop, 200 {ready:.2f}s after the start"
        )


async def both_ready(probe: Probe, instances: list[ServerProcess], since: float) -> bool:
    return all(probe.statuses(instance.name, since, time.monotonic()) & {200} for instance in instances)


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
