"""Gap-proof delivery under faults: three instances on PostgreSQL and a Redis of the test's own, one room,
two senders keeping up a steady stream, and readers on the instances that survive.

One fault at a time, while the stream goes on:

- Redis stopped for `OUTAGE_SECONDS`, then started again, empty;
- `CLIENT KILL TYPE pubsub`: every instance's subscriber connection dropped;
- `client-output-buffer-limit pubsub` set tiny and a large message published to the room's channel, so that
  Redis disconnects the instances' subscribers as lagging, then the limit restored;
- the third instance killed (SIGKILL) between the COMMIT of a message and its PUBLISH (the
  `CHAT_FAULT_KILL_AFTER_COMMIT` hook);
- a reader that stops reading while long messages flow, closed with 1013, then reconnecting with `since`.

Every reader that stayed connected gets seqs 1..N, N the room's stored messages, each once and in order,
without reconnecting; the slow reader gets the same across its two connections. For each fault, the time
from a message's commit (`created_at`) to its arrival at a reader is measured: those that arrived late
(missed live, healed from the history) give the heal latency printed, and kept in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..app.support import create_tables
from ..app.ws_support import instance_env, start_instances
from ..processes import ProcessGroup, ServerProcess, wait_until
from .faults import PrivateRedis
from .outage_clients import sign_in_all

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

ROOM = "chaos"
SEND_INTERVAL = 0.05  # each of the two senders: 40 messages a second in the room
KILL_TEXT = "the last words of app3"
OUTAGE_SECONDS = 2.0
STEADY_SECONDS = 2.0  # of undisturbed stream before each fault and after it
READY_TIMEOUT = 20.0
CATCH_UP_TIMEOUT = 30.0
QUEUE_SIZE = 32  # WS_OUTBOUND_QUEUE_SIZE: a reader that stops reading overflows sooner
LONG_TEXT = "x" * 3900
LONG_INTERVAL = 0.03
MAX_LONG_MESSAGES = 2000
# The slow reader offers a small window and small segments, so the server's kernel buffers little for it.
RECEIVE_BUFFER_BYTES = 16 * 1024
SEGMENT_BYTES = 1024
LATE_SECONDS = 0.1  # arrived this long after its commit: missed live, healed from the history
TINY_PUBSUB_LIMIT = "pubsub 1 1 0"
DEFAULT_PUBSUB_LIMIT = "pubsub 33554432 8388608 60"


@dataclass
class Reader:
    """One connection to the room, and the seqs it received with their commit-to-arrival latency."""

    name: str
    instance: str
    websocket: ClientConnection
    seqs: list[int] = field(default_factory=list)
    committed: dict[int, float] = field(default_factory=dict)  # wall clock, by seq
    latencies: dict[int, float] = field(default_factory=dict)  # commit to arrival, by seq
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    close_codes: list[int | None] = field(default_factory=list)
    texts: set[str] = field(default_factory=set)  # of the chat messages received

    async def read(self) -> None:
        """Receive until closed; pauses while `reading` is clear."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.reading.wait()
                frame = json.loads(await self.websocket.recv())
                if frame["type"] == "chat.message":
                    self.seqs.append(frame["seq"])
                    self.texts.add(frame["text"])
                    committed = datetime.fromisoformat(frame["created_at"].replace("Z", "+00:00")).timestamp()
                    self.committed.setdefault(frame["seq"], committed)
                    self.latencies.setdefault(frame["seq"], time.time() - committed)
                elif frame["type"] == "history.truncated":
                    raise AssertionError(f"{self.name}: a replay within the window was truncated")
        self.close_codes.append(self.websocket.close_code)


@dataclass
class Fault:
    name: str
    started: float = 0.0  # wall clock, as `created_at`
    ended: float = 0.0


@dataclass
class Stream:
    """Senders saying a numbered line every `SEND_INTERVAL` until stopped."""

    senders: list[Reader]
    said: int = 0
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    last_said: dict[str, str] = field(default_factory=dict)  # by sender

    async def all_stored(self) -> bool:
        """Each sender heard its own last line: the lines it sent before are stored too (in order, on one
        connection), so the room's count no longer grows once the senders stopped."""
        return all(
            said in sender.texts for sender in self.senders if (said := self.last_said.get(sender.name))
        )

    async def run(self) -> None:
        async def keep_sending(sender: Reader) -> None:
            with contextlib.suppress(ConnectionClosed):
                while not self.stopped.is_set():
                    self.said += 1
                    text = self.last_said[sender.name] = f"{sender.name} {self.said}"
                    await sender.websocket.send(json.dumps({"type": "chat.message", "text": text}))
                    await asyncio.sleep(SEND_INTERVAL)

        await asyncio.gather(*(keep_sending(sender) for sender in self.senders))


async def ready(instances: list[ServerProcess]) -> bool:
    async with httpx.AsyncClient(timeout=5) as http:
        for instance in instances:
            try:
                if (await http.get(instance.base_url + "/readyz")).status_code != 200:
                    return False
            except httpx.TransportError:
                return False
    return True


async def metric(instance: ServerProcess, name: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(instance.base_url + "/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def stored_messages(database_url: str) -> int:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        last_seq: int = await connection.fetchval("SELECT last_seq FROM rooms WHERE name = $1", ROOM)
        count: int = await connection.fetchval(
            "SELECT count(*) FROM messages m JOIN rooms r ON r.id = m.room_id WHERE r.name = $1", ROOM
        )
    finally:
        await connection.close()
    assert count == last_seq, "the seqs of the room are not contiguous"
    return last_seq


async def pubsub_clients(admin: aioredis.Redis) -> set[str]:
    return {str(client["id"]) for client in await admin.client_list(_type="pubsub")}


async def not_running(instance: ServerProcess) -> bool:
    return not instance.running


def quantile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def test_every_reader_gets_every_message_once_in_order_through_each_fault(
    postgres_database_url: str,
    broker_channel: str,
    redis_server: PrivateRedis,
    process_group: ProcessGroup,
) -> None:
    await create_tables(postgres_database_url)
    env = instance_env(
        postgres_database_url,
        redis_server.url,
        broker_channel,
        ws_rate_limit_per_second="1000",
        ws_rate_limit_burst="1000",
        ws_outbound_queue_size=str(QUEUE_SIZE),
        chat_fault_kill_after_commit=KILL_TEXT,
    )
    instances = await asyncio.to_thread(start_instances, process_group, env, ("app1", "app2", "app3"))
    app1, app2, app3 = instances
    names = ["s1", "s2", "r1", "r2", "r3", "r4", "slow", "bulk", "doomed"]
    users = {name: f"{name}-{broker_channel[-6:]}" for name in names}
    tokens = await asyncio.to_thread(sign_in_all, app1.base_url, list(users.values()))
    async with httpx.AsyncClient(base_url=app1.base_url, timeout=10) as http:
        response = await http.post(
            "/rooms",
            json={"name": ROOM, "title": ROOM},
            headers={"Authorization": f"Bearer {tokens[users['s1']]}"},
        )
        assert response.status_code == 201, response.text
    admin = aioredis.Redis.from_url(redis_server.url)
    faults: list[Fault] = []

    async with AsyncExitStack() as stack:

        async def join(
            name: str, instance: ServerProcess, *, since: int | None = None, **options: Any
        ) -> Reader:
            query = "" if since is None else f"?since={since}"
            websocket = await stack.enter_async_context(
                connect(
                    f"{instance.ws_url}/ws/rooms/{ROOM}{query}",
                    additional_headers={"Authorization": f"Bearer {tokens[users[name]]}"},
                    compression=None,
                    open_timeout=30,
                    **options,
                )
            )
            reader = Reader(name, instance.name, websocket)
            reader.reading.set()
            return reader

        async def join_slow(instance: ServerProcess) -> Reader:
            """A reader that offers a small window and small segments: the server's kernel buffers little
            for it once it stops reading, so its outbound queue overflows soon."""
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SEGMENT_BYTES)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", instance.port))
            return await join("slow", instance, sock=sock, max_queue=1)

        s1, s2 = await join("s1", app1), await join("s2", app2)
        steady = [s1, s2, await join("r1", app1), await join("r2", app1)]
        steady += [await join("r3", app2), await join("r4", app2)]
        slow, bulk, doomed = await join_slow(app1), await join("bulk", app2), await join("doomed", app3)
        everyone = [*steady, slow, bulk, doomed]
        tasks = [asyncio.create_task(reader.read()) for reader in everyone]
        stream = Stream([s1, s2])
        streaming = asyncio.create_task(stream.run())
        survivors = [app1, app2]

        async def fault(name: str) -> Fault:
            await asyncio.sleep(STEADY_SECONDS)
            found = Fault(name, started=time.time())
            faults.append(found)
            return found

        # Redis restarted.
        restart = await fault("Redis restarted (down 2 s)")
        await asyncio.to_thread(redis_server.stop)
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(redis_server.start)
        await wait_until(lambda: ready(instances), within=READY_TIMEOUT)
        restart.ended = time.time()

        # Every subscriber connection killed.
        kill_pubsub = await fault("CLIENT KILL TYPE pubsub")
        killed = await admin.client_kill_filter(_type="pubsub")
        assert killed >= len(instances)
        await wait_until(lambda: ready(instances), within=READY_TIMEOUT)
        kill_pubsub.ended = time.time()

        # Subscribers dropped by Redis as lagging.
        lagging = await fault("client-output-buffer-limit pubsub tiny")
        subscribers = await pubsub_clients(admin)
        await admin.config_set("client-output-buffer-limit", TINY_PUBSUB_LIMIT)
        channel = f"{broker_channel}:group:room:{ROOM}"

        async def dropped() -> bool:
            await admin.publish(channel, b"x" * (256 * 1024))  # more than an output buffer's first block
            return not subscribers & await pubsub_clients(admin)

        await wait_until(dropped, within=READY_TIMEOUT)
        await admin.config_set("client-output-buffer-limit", DEFAULT_PUBSUB_LIMIT)
        await wait_until(lambda: ready(instances), within=READY_TIMEOUT)
        lagging.ended = time.time()

        # An instance killed between COMMIT and PUBLISH.
        crash = await fault("instance SIGKILLed between COMMIT and PUBLISH")
        await doomed.websocket.send(json.dumps({"type": "chat.message", "text": KILL_TEXT}))
        await wait_until(lambda: not_running(app3), within=READY_TIMEOUT)
        crash.ended = time.time()

        # A reader too slow, closed with 1013, reconnecting with `since`.
        too_slow = await fault("slow reader closed with 1013, reconnects with since")
        slow.reading.clear()
        for number in range(MAX_LONG_MESSAGES):
            await bulk.websocket.send(json.dumps({"type": "chat.message", "text": f"{LONG_TEXT} {number}"}))
            await asyncio.sleep(LONG_INTERVAL)
            if number % 20 == 0 and await metric(app1, "realtime_slow_consumer_closes_total") >= 1:
                break
        else:
            raise AssertionError("the slow reader was never closed")
        slow.reading.set()
        async with asyncio.timeout(CATCH_UP_TIMEOUT):
            await tasks[everyone.index(slow)]
        assert slow.close_codes == [1013]
        first_connection = list(slow.seqs)
        again = await join("slow", app1, since=first_connection[-1])
        tasks.append(asyncio.create_task(again.read()))
        too_slow.ended = time.time()

        await asyncio.sleep(STEADY_SECONDS)
        heals = {
            instance.name: await metric(instance, "realtime_recovery_heals_total") for instance in survivors
        }
        stream.stopped.set()
        await streaming
        await wait_until(stream.all_stored, within=CATCH_UP_TIMEOUT)
        total = await stored_messages(postgres_database_url)
        connected = [*steady, bulk]

        async def caught_up() -> bool:
            return all(len(reader.seqs) >= total for reader in connected) and (
                len(first_connection) + len(again.seqs) >= total
            )

        await wait_until(caught_up, within=CATCH_UP_TIMEOUT)
        await asyncio.sleep(1.0)  # anything sent twice would have arrived by now
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await admin.aclose()

    expected = list(range(1, total + 1))
    for reader in connected:
        assert reader.close_codes == [], f"{reader.name} was disconnected"
        assert reader.seqs == expected, f"{reader.name}: lost, duplicated or out of order"
    assert first_connection + again.seqs == expected, "slow: lost, duplicated or out of order"
    assert first_connection == list(range(1, len(first_connection) + 1))

    report(faults, [*connected, slow, again], total)
    print(f"  connections healed from the history, by instance: {heals}")


def report(faults: list[Fault], readers: list[Reader], total: int) -> None:
    """Per fault, from its start to the next one's: the messages stored, how many each reader got, and the
    heal latency of the deliveries that came late (missed live)."""
    print(f"\nchaos: {total} messages stored; {len(readers) - 2} readers stayed connected, 1 reconnected")
    undisturbed = [
        latency
        for reader in readers
        for seq, latency in reader.latencies.items()
        if reader.committed[seq] < faults[0].started
    ]
    p50, p99 = quantile(undisturbed, 0.5), quantile(undisturbed, 0.99)
    print(f"  undisturbed: latency p50 {p50:.3f} s, p99 {p99:.3f} s")
    print("| fault | stored | received per reader (min/max) | lost / dup / out of order | heal p50 / p99 |")
    for index, found in enumerate(faults):
        end = faults[index + 1].started if index + 1 < len(faults) else float("inf")
        stored = {
            seq for reader in readers for seq, at in reader.committed.items() if found.started <= at < end
        }
        received = [
            sum(found.started <= at < end for at in reader.committed.values()) for reader in readers[:-2]
        ]
        slow_received = sum(
            found.started <= at < end for reader in readers[-2:] for at in reader.committed.values()
        )
        late = [
            reader.latencies[seq]
            for reader in readers
            for seq, at in reader.committed.items()
            if found.started <= at < end and reader.latencies[seq] > LATE_SECONDS
        ]
        heal = (
            f"{quantile(late, 0.5):.2f} s / {quantile(late, 0.99):.2f} s ({len(late)} late)"
            if late
            else "none late"
        )
        print(
            f"| {found.name} | {len(stored)} | {min([*received, slow_received])} / "
            f"{max([*received, slow_received])} | 0 / 0 / 0 | {heal} |"
        )
