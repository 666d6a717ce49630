"""Redis restarted under two instances while 200 clients chat, on PostgreSQL and a Redis of the test's own.

100 users, each connected to both instances, in four rooms; two users of each room say something every
`TALK_INTERVAL` seconds from each instance, before, during and after the outage. Redis is stopped for
`OUTAGE_SECONDS`, then started again, empty. Meanwhile:

- `/readyz` of each instance answers 503, naming the broker, for as long as Redis is down, and 200 again
  once its listener has reconnected and subscribed again, by itself: no instance is restarted;
- no message is refused: each is stored, and reaches the connection that sent it at once, even while Redis
  is down; the rooms being recoverable groups, every client of the room, on both instances, gets those that
  could not be published from the history (the instance's next check of the room), while staying connected,
  and no client hears any message twice;
- what is said once both are ready again reaches, live, every client of the room on both instances;
- every client then reconnects with `since=<the last seq it saw before the outage>` and is replayed exactly
  the room's stored messages after that seq, each once; with what it heard live, that is every message of
  the room: no stored message is missing from any client.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from contextlib import AsyncExitStack

import httpx
import pytest
from websockets.asyncio.client import connect

from ..app.support import create_tables
from ..app.ws_support import instance_env, start_instances
from ..processes import ProcessGroup, wait_until
from .faults import PrivateRedis
from .outage_clients import (
    Probe,
    Rejoin,
    RoomClient,
    Said,
    both_ready,
    heard_in,
    probing,
    said_in,
    sender_instance,
    settled,
    sign_in_all,
    stored,
    talk,
)

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

USERS = 100
ROOMS = 4
TALKERS_PER_ROOM = 2
TALK_SECONDS = 3.0  # before the outage, and again once both instances are ready
OUTAGE_SECONDS = 3.0
RECOVERY_TIMEOUT = 15.0  # the listener retries with a backoff of at most 5 s


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
        during = probe.answers(instance.name, stopped_at + 1.0, started_at)
        assert during, instance.name
        assert {(found.status, found.checks["database"]) for found in during} == {(503, "ok")}
        assert all(found.checks["broker"].startswith("error: broker") for found in during), during
    rejoin = Rejoin()
    replayed = await asyncio.gather(
        *(rejoin.replay(client.url, tokens[client.user], client.last_before_outage) for client in clients)
    )
    missing: dict[tuple[str, str], set[int]] = {}
    for client, replayed_ids in zip(clients, replayed, strict=True):
        stored_ids = set(messages[client.room])
        assert len(set(client.ids)) == len(client.ids), client.user
        after_resume_point = {
            message_id for message_id in stored_ids if message_id > client.last_before_outage
        }
        assert replayed_ids == sorted(after_resume_point), client.user
        if gap := stored_ids - set(client.ids) - set(replayed_ids):
            missing[client.user, client.instance] = gap
    assert not missing, missing

    outage = said.between(stopped_at, started_at)
    stored_texts = {text for found in messages.values() for text in found.values()}
    errors = Counter(code for client in talkers for code in client.errors)
    # What was sent while Redis was down was stored, sent at once to its sender, and healed from the history
    # to every other client of the room on that instance without a reconnection.
    assert outage
    assert outage <= stored_texts
    assert not errors, errors
    echo_delays: list[float] = []
    published_after_start: list[float] = []
    live_elsewhere = elsewhere = 0
    for room, found in messages.items():
        for message_id in said_in(found, outage):
            text = found[message_id]
            for client in (client for client in clients if client.room == room):
                heard_at = client.received_at.get(message_id)
                if text.startswith(f"{client.user}@{client.instance}#"):
                    assert heard_at is not None, (client.user, client.instance, text)
                    echo_delays.append(heard_at - said.at[text])
                elif client.instance == sender_instance(text):
                    assert heard_at is not None, (client.user, client.instance, text)
                    published_after_start.append(heard_at - started_at)
                else:
                    elsewhere += 1
                    live_elsewhere += heard_at is not None
    unheard_after = sum(
        len(said_in(found, after_recovery) - heard_after[room]) for room, found in messages.items()
    )
    assert unheard_after == 0
    print(f"\nRedis restart under {len(clients)} clients on {len(instances)} instances:")
    print(f"  {len(said.at)} messages sent, {len(stored_texts)} stored, refused: {dict(errors)}")
    print(
        f"  during the outage {len(outage)} sent, {len(echo_delays)} stored and echoed to their sender "
        f"within {max(echo_delays):.2f}s (median {statistics.median(echo_delays):.3f}s)"
    )
    print(
        f"  healed from the history: heard by the {len(published_after_start)} other clients of the room "
        f"on their sender's instance, {min(published_after_start):.2f} to {max(published_after_start):.2f}s "
        f"after Redis started again (negative: before), and by {live_elsewhere} of {elsewhere} on the other "
        "instance, without reconnecting"
    )
    print(f"  after recovery {len(after_recovery)} sent, all heard live by every client of their room")
    print(
        f"  {sum(len(client.ids) for client in clients)} delivered live, {sum(map(len, replayed))} replayed, "
        f"none twice; {sum(map(len, missing.values()))} stored messages missing from a client"
    )
    print(f"  reconnections closed before their replay was over, by code: {dict(rejoin.closed_early)}")
    for instance in instances:
        unready = probe.first(instance.name, 503, stopped_at) - stopped_at
        ready = probe.first(instance.name, 200, started_at) - started_at
        print(
            f"  {instance.name}: /readyz 503 {unready:.2f}s after the stop, 200 {ready:.2f}s after the start"
        )
